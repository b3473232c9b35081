# dlmie configures PyTensor (C backend, float32, BLAS) when it is imported, which must happen
# before anything imports pytensor; test modules are collected in any order, so do it here.
import dlmie  # noqa: F401
