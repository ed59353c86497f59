"""CUDA (numba-cuda) versions of the engine kernels. Never imports JAX.

- `port`: the CPU engine's Numba functions recompiled as CUDA device functions
  from their own source (numpy scalar ufuncs mapped to the CUDA target, float
  literals typed float32 in float32 mode);
- `engine`: the MD kernel (whole trajectory segments of R replicas in one launch,
  or one large system over a cooperative grid), built per force field and integrator;
- `ptx`: compile the kernels to PTX without a GPU (verification only).

The Python front ends are `difftre.md_cuda.CudaSampler` and `HostSteppedSampler`. Importing this package
does not import numba.cuda; the submodules do.
"""
