
defaultds-1:bot