"""Checks the cost engine's meta fast paths (explorer.cost.meta_fast_path) against the real meta kernels."""
import collections

from torch.utils._python_dispatch import TorchDispatchMode


class FastPathCheck(TorchDispatchMode):
    """Runs every op's real meta kernel and, where the engine has a fast path, asserts that its outputs have the
    kernel's shapes, dtypes and strides; `checked` counts the ops compared, by name."""

    def __init__(self):
        super().__init__()
        self.checked: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from explorer.cost import meta_fast_path

        kwargs = kwargs or {}
        fast = meta_fast_path(func, args) if not kwargs else None
        out = func(*args, **kwargs)
        if fast is not None:
            pairs = zip(fast, out) if isinstance(out, tuple) else [(fast, out)]
            for a, b in pairs:
                assert (a.shape, a.dtype, a.stride()) == (b.shape, b.dtype, b.stride()), func
            self.checked[func._schema.name.split("::")[-1]] += 1
        return out
