
defaultds-1ds-v*x2Z.*\.(q|v)_projrlayers:bot