/* The AVX2 + FMA variant (x86-64-v3): 32-byte vectors, 16 registers: panel blocks of 3
 * vectors x 4 columns (12 accumulators, 3 loads, 1 broadcast), grad_weight blocks of 2
 * vectors x 6 rows, few-channel grad_weight blocks of 12 accumulators. */
#if defined(__x86_64__) && defined(__GNUC__)
#define CONV3DT_FN static __attribute__((target("avx2,fma")))
#define CONV3DT_VECTOR_BYTES 32
#define CONV3DT_PANEL_MV 3
#define CONV3DT_PANEL_NR 4
#define CONV3DT_WGRAD_NR 6
#define CONV3DT_DOT_NB 12
#define CONV3DT_RECORD conv3dt_isa_avx2
#define CONV3DT_NAME "avx2"
#include "microkernels.h"
#endif
