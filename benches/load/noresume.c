/*
 * LD_PRELOAD shim for wrk in benches/load.sh: no TLS session resumption.
 *
 * wrk reuses one SSL object per connection slot; on reconnect it calls
 * SSL_shutdown and SSL_clear, which keeps the finished session, so the next
 * handshake resumes it (checked with nginx's $ssl_session_reused). Forgetting
 * the session right after SSL_clear makes every connection a full handshake.
 * No OpenSSL headers needed: both functions are found at run time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_clear(SSL *s)
{
    static int (*clear)(SSL *);
    static int (*set_session)(SSL *, SSL_SESSION *);
    if (clear == NULL) {
        clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    int r = clear(s);
    if (r == 1)
        r = set_session(s, NULL);
    return r;
}
