import importlib
import sys

ALL = ["cost_speed", "app_speed", "swap_speed", "views_speed", "compare_speed", "graph_speed", "memory_walk", "memory_speed", "gpu_latency", "gpu_memory"]

if sys.argv[1:2] == ["load"]:  # the load test takes its own flags and needs a server: it runs only when named
    sys.exit(importlib.import_module("benchmarks.load").main(sys.argv[2:]))

for name in sys.argv[1:] or ALL:
    importlib.import_module(f"benchmarks.{name}").main()
