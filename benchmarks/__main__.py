import importlib
import sys

ALL = ["cost_speed", "app_speed", "swap_speed", "views_speed", "compare_speed", "memory_walk", "gpu_latency"]

for name in sys.argv[1:] or ALL:
    importlib.import_module(f"benchmarks.{name}").main()
