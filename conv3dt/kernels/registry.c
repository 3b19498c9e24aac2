/* The registry of instruction-set variants (see isa.h): best first, generic last. Adding a
 * variant: its file (a copy of avx2.c with its own target and block sizes), one entry
 * here, and its file in setup.py's list of sources. */
#include "isa.h"

extern const conv3dt_isa conv3dt_isa_generic;
#if defined(__x86_64__) && defined(__GNUC__)
#define CONV3DT_X86_VARIANTS 1
extern const conv3dt_isa conv3dt_isa_avx2;
extern const conv3dt_isa conv3dt_isa_avx512;

static int avx512_supported(void) {
    /* __builtin_cpu_supports also checks that the operating system saves the registers */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
           && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
           && __builtin_cpu_supports("fma");
}

static int avx2_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

static int always(void) { return 1; }

static const struct {
    const conv3dt_isa *isa;
    int (*supported)(void);
} variants[] = {
#ifdef CONV3DT_X86_VARIANTS
    {&conv3dt_isa_avx512, avx512_supported},
    {&conv3dt_isa_avx2, avx2_supported},
#endif
    {&conv3dt_isa_generic, always},
};

int conv3dt_isa_count(void) { return (int)(sizeof(variants) / sizeof(variants[0])); }

const conv3dt_isa *conv3dt_isa_get(int index) {
    return index >= 0 && index < conv3dt_isa_count() ? variants[index].isa : NULL;
}

int conv3dt_isa_supported(int index) {
    return index >= 0 && index < conv3dt_isa_count() && variants[index].supported();
}
