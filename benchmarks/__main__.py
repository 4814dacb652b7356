import sys

from benchmarks.run import main

rows = main()
sys.exit(1 if any(r.metric == "error" for r in rows) else 0)
