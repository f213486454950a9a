// PHIMOE_HOST_DEVICE marks small inline functions compiled for both the CPU and, under nvcc, the
// GPU, so that both backends run literally the same code where results must agree bit for bit.
#pragma once

#ifdef __CUDACC__
#define PHIMOE_HOST_DEVICE __host__ __device__
#else
#define PHIMOE_HOST_DEVICE
#endif
