"""Pretty-prints the JSON lines of oft_generate ("gen") and oft_train ("train") for the demo."""
import json
import sys

mode = sys.argv[1]
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    e = json.loads(line)
    if mode == "gen":
        print("  %r -> %r" % (e["prompt"], e["completion"]))
        continue
    kind = e["kind"]
    if kind == "step":
        n, t = e["step"], e["total_steps"]
        bar = "#" * int(30 * n / t)
        print("\r  [%-30s] step %d/%d  loss %.3f  lr %.2e  %.0f tok/s  ETA %.0fs   "
              % (bar, n, t, e["loss"], e["learning_rate"], e["tokens_per_second"], e["eta_seconds"]),
              end="", flush=True)
    elif kind == "eval":
        print("\n  eval loss %.3f at step %d" % (e["eval_loss"], e["step"]))
    elif kind == "done":
        print("  " + e["message"])
    elif kind == "error":
        print("\n  error: " + e["message"])
        sys.exit(1)
