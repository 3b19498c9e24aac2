# Ctrl-C during a pass (included by _kernels.pyx).
#
# A pass runs without the GIL, so Python only sees a SIGINT once the pass returns: a long
# one would ignore Ctrl-C for seconds. For the time of its parallel region, a pass called
# from the main thread, where Ctrl-C would raise KeyboardInterrupt (Python's own handler
# is installed), catches SIGINT itself: a C handler sets a flag, the work items that start
# afterwards see it and skip their work, and once the previous handler is back the pass
# returns INTERRUPTED, which conv3dt._cpu raises as KeyboardInterrupt, as Python would
# have for that Ctrl-C. Elsewhere signals are left alone: a pass in another thread is
# never cut short by a Ctrl-C meant for the main thread, and a handler of the user's runs
# as usual, once the pass returns. The work items check the flag between them, never
# inside, so a pass stops within the duration of one item per thread.

# The C module behind `signal` (CPython's own): its getsignal costs 40 ns, where
# signal.getsignal's conversion to an enum costs 3 us, a tenth of a tiny pass.
import _signal
import threading as _threading

cdef int _SIGINT = int(_signal.SIGINT)

cdef extern from *:
    """
    #include <signal.h>
    #include <string.h>

    /* Set by the handler, read by the work items of the pass in flight. A volatile
       sig_atomic_t is what a signal handler may write; the items read it once each. */
    static volatile sig_atomic_t conv3dt_sigint_seen = 0;

    #if defined(_WIN32)
    /* signal(): the C runtime resets a handler to SIG_DFL before it calls it, so the
       handler puts itself back (as Python's does) while the pass is in flight, so that a
       second Ctrl-C does not end the process. */
    static volatile sig_atomic_t conv3dt_sigint_caught = 0;
    static void conv3dt_on_sigint(int signum) {
        conv3dt_sigint_seen = 1;
        if (conv3dt_sigint_caught) signal(signum, conv3dt_on_sigint);
    }
    static void (*conv3dt_previous_sigint)(int) = SIG_DFL;
    static int conv3dt_catch_sigint(void) {
        void (*previous)(int);
        conv3dt_sigint_seen = 0;
        conv3dt_sigint_caught = 1;
        previous = signal(SIGINT, conv3dt_on_sigint);
        if (previous == SIG_ERR) {
            conv3dt_sigint_caught = 0;
            return 0;
        }
        conv3dt_previous_sigint = previous;
        return 1;
    }
    static void conv3dt_release_sigint(void) {
        conv3dt_sigint_caught = 0;
        signal(SIGINT, conv3dt_previous_sigint);
    }
    #else
    static void conv3dt_on_sigint(int signum) {
        (void)signum;
        conv3dt_sigint_seen = 1;
    }
    static struct sigaction conv3dt_previous_sigint;
    static int conv3dt_catch_sigint(void) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = conv3dt_on_sigint;
        sigemptyset(&action.sa_mask);
        /* Waits of the OpenMP runtime that the signal interrupts resume by themselves. */
        action.sa_flags = SA_RESTART;
        conv3dt_sigint_seen = 0;
        return sigaction(SIGINT, &action, &conv3dt_previous_sigint) == 0;
    }
    static void conv3dt_release_sigint(void) {
        sigaction(SIGINT, &conv3dt_previous_sigint, NULL);
    }
    #endif

    static int conv3dt_sigint_was_seen(void) { return conv3dt_sigint_seen != 0; }
    """
    int conv3dt_catch_sigint() nogil
    void conv3dt_release_sigint() nogil
    int conv3dt_sigint_was_seen() nogil


cdef bint _catch_sigint():
    """Before a pass's parallel region: catch SIGINT where Ctrl-C would raise
    KeyboardInterrupt in this thread (the main thread, with Python's default handler).
    Returns whether it did; then the pass is interruptible and must call _release_sigint
    once its parallel region is over. Only the main thread's passes catch it, so one at a
    time."""
    if _threading.get_ident() != _threading.main_thread().ident:
        return False
    if _signal.getsignal(_SIGINT) is not _signal.default_int_handler:
        return False
    return conv3dt_catch_sigint() != 0


cdef bint _release_sigint(bint caught) noexcept:
    """After the parallel region: the previous handler back (where _catch_sigint caught
    SIGINT). Returns whether Ctrl-C came meanwhile."""
    if not caught:
        return False
    conv3dt_release_sigint()
    return conv3dt_sigint_was_seen() != 0


cdef inline bint _interrupted(bint interruptible) noexcept nogil:
    """At the start of a work item: whether the pass should skip it (Ctrl-C came)."""
    return interruptible and conv3dt_sigint_was_seen() != 0
