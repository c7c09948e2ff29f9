/* fd_limit — see fd_limit.h. */
#include "fd_limit.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "log.h"

long fd_limit_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn("cannot read the open-file limit: %s", strerror(errno));
        return -1;
    }
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("open-file limit: %llu, cannot raise it to the hard limit %llu: %s",
                     (unsigned long long)before, (unsigned long long)rl.rlim_max, strerror(errno));
            return (long)before;
        }
    }
    log_info("open-file limit: %llu (was %llu; the hard limit)", (unsigned long long)rl.rlim_cur,
             (unsigned long long)before);
    return (long)rl.rlim_cur;
}
