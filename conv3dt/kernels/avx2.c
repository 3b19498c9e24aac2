/* The AVX2 + FMA variant (x86-64-v3): 32-byte vectors, 16 registers: panel blocks of 3
 * vectors x 4 columns (12 accumulators, 3 loads, 1 broadcast), grad_weight blocks of 2
 * vectors x 6 rows, few-channel grad_weight blocks of 12 accumulators. */
#if defined(__x86_64__) && defined(__GNUC__)
#define CONV3DT_FN static __attribute__((target("avx2,fma")))
#define CONV3DT_VECTOR_BYTES 32
#define CONV3DT_PANEL_MV 3
#define CONV3DT_PANEL_NR 4
#define CONV3DT_THIN_MV 12
#define CONV3DT_WGRAD_NR 6
/* the panel product beats the direct path even for one output channel (dw_k3s2_g64
 * forward 14.2 against 16.1 ms, C_in 32 -> C_out 1 at 32^3 2.4 against 6.2 ms, one
 * thread, Xeon) */
#define CONV3DT_DIRECT_COUT 0
#define CONV3DT_DOT_NB 12
#define CONV3DT_RECORD conv3dt_isa_avx2
#define CONV3DT_NAME "avx2"
#include "microkernels.h"
#endif
