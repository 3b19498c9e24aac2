/* The generic variant: 16-byte vectors (SSE2 on x86-64, NEON on aarch64, plain C where a
 * compiler has neither), 16 vector registers: panel blocks of 3 vectors x 4 columns (12
 * accumulators), grad_weight blocks of 2 vectors x 6 rows. What every CPU runs. */
#define CONV3DT_FN static
#define CONV3DT_VECTOR_BYTES 16
#define CONV3DT_PANEL_MV 3
#define CONV3DT_PANEL_NR 4
#define CONV3DT_THIN_MV 12
#define CONV3DT_WGRAD_NR 6
/* the direct path (axpy from x) beats the panel product of 16-byte vectors for one or
 * two output channels (dw_k3s2_g64 forward 20.1 against 24.6 ms, one thread) */
#define CONV3DT_DIRECT_COUT 2
#define CONV3DT_DOT_NB 12
#define CONV3DT_RECORD conv3dt_isa_generic
#define CONV3DT_NAME "generic"
#include "microkernels.h"
