/*
 * security — the pieces of the project's security policy that several
 * programs share (docs/SECURITY.md describes the policy as a whole):
 *
 *   exposure  sec_url_is_local() tells a loopback or local-socket address
 *             (ipc://, abstract://, inproc://, tcp on 127.0.0.0/8, ::1 or
 *             localhost) from one other hosts can reach, and
 *             sec_check_exposure() refuses to listen on the latter unless
 *             both TLS and authentication are configured. Every listening
 *             program calls it before it listens, so an unsafe setting
 *             stops start-up with a message saying what to configure.
 *   TLS       sec_tls_listener() / sec_tls_dialer() put certificate files
 *             (PEM) on an nng listener or dialer of a tls+tcp:// URL;
 *             sec_listener_tls_hook() is the same, in the shape of
 *             sp_listener_opts.configure (common/listener.h).
 *   secrets   sec_read_secret_file() reads a token file that only its owner
 *             may read; sec_equal() compares secrets in constant time.
 *   files     sec_check_private_stat() is the rule for a file only its owner
 *             may touch (token files, databases: common/db_files.h).
 *   paths     sec_check_trusted_path() tells whether only this user (or
 *             root) could have put or changed a file sagad runs (a hook);
 *             sec_check_socket_dir() whether only they can replace a socket
 *             in its directory; sec_socket_owner_only() makes a socket file
 *             0600 without following a symbolic link.
 *
 * Nothing here logs a secret or keeps one longer than the caller asks.
 */
#ifndef SAGA_SECURITY_H
#define SAGA_SECURITY_H

#include <nng/nng.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define SEC_SECRET_MAX 4096 /* bytes in a token file */

/* Certificate files of one end of a TLS connection. All paths PEM; NULL: not set. */
typedef struct {
    const char *ca_file;   /* CAs that sign the peer's certificate */
    const char *cert_file; /* our certificate (chain) */
    const char *key_file;  /* its private key */
    int require_peer_cert; /* listener: refuse clients without a valid certificate */
} sec_tls_files;

/* Is url a tls+tcp:// (tls+tcp4, tls+tcp6) URL? Schemes match in any case,
 * as nng's do. */
int sec_url_is_tls(const char *url);
/* 1 when only this user can reach url: ipc:// (the listener makes the
 * socket file 0600) or inproc://. */
/* Does url start with "<scheme>://" (the scheme matched case-insensitively, as nng does)? */
int sec_url_has_scheme(const char *url, const char *scheme);
int sec_url_is_owner_only(const char *url);
/*
 * 1 when only this host can reach url: an owner-only URL, abstract:// (no
 * file, so no permissions: every local user can connect), or a tcp/tls/ws
 * host that is 127.0.0.0/8, ::1 or "localhost"; 0 otherwise (also for an
 * empty host, which listens on every interface, and for a URL that does not
 * parse).
 */
int sec_url_is_local(const char *url);
/*
 * May `what` (e.g. "admin_url", "payment --listen") listen on url?
 *   - an owner-only URL (ipc://, inproc://): always;
 *   - another local one (loopback port, abstract://): only with
 *     authentication (auth_ok), since every local user can connect;
 *   - any other: only when it is a TLS URL (tls_ok: the certificates are
 *     set) and authentication is configured.
 * how_tls / how_auth name the settings that provide them, for the message.
 * Returns 0, or -1 with "what: refusing to listen on URL, which ... can
 * reach, without ...: configure ..." in err. A URL that passes is also held
 * to sec_check_listen_host.
 */
int sec_check_exposure(const char *what, const char *url, int tls_ok, int auth_ok,
                       const char *how_tls, const char *how_auth, char *err, size_t errlen);

/*
 * May a program listen on url as far as its host goes? An IP literal, an
 * empty host or a URL without a host (ipc://, abstract://): yes. A host name
 * must resolve to exactly one address: a listener binds one, and clients that
 * resolve the name to another (localhost is 127.0.0.1 *and* ::1 on a stock
 * Debian) would find nothing there. Returns 0, or -1 with "what: URL names
 * host H, which resolves to several addresses (A, B): write the address
 * itself, e.g. URL-with-A or URL-with-B" (or "does not resolve") in err.
 * sec_check_exposure calls it once the URL's class is allowed.
 */
int sec_check_listen_host(const char *what, const char *url, char *err, size_t errlen);

/*
 * For a pipe just connected to url: is the process at the other end run by
 * this user (or root)? For an ipc:// or abstract:// url, 1 when it is, and 0
 * otherwise with the peer's uid in *uid, or when the uid cannot be read
 * (*uid = UINT64_MAX): fail closed. For other urls, 1 (TLS and tokens
 * authenticate there). A dialer checks this so that a socket another user
 * created first at the configured address is never sent a step or a token.
 */
int sec_pipe_peer_trusted(nng_pipe pipe, const char *url, uint64_t *uid);

/*
 * Puts a server TLS configuration made of t on listener l (of a tls+tcp
 * URL): t->cert_file and t->key_file are required; t->ca_file is required
 * when t->require_peer_cert. Returns 0 or an nng error with a reason in err.
 */
int sec_tls_listener(nng_listener l, const sec_tls_files *t, char *err, size_t errlen);
/* sp_listener_opts.configure hook: arg is a const sec_tls_files *; does
 * nothing for a URL that is not tls+tcp. */
int sec_listener_tls_hook(nng_listener l, void *arg, char *err, size_t errlen);
/*
 * Puts a client TLS configuration on dialer d: the peer must present a
 * certificate signed by t->ca_file (required) for server_name (the URL's
 * host); t->cert_file / key_file, when set, are our client certificate.
 */
int sec_tls_dialer(nng_dialer d, const sec_tls_files *t, const char *server_name, char *err,
                   size_t errlen);
/* The host of url, malloc'd (for sec_tls_dialer), or NULL. */
char *sec_url_host(const char *url);

/*
 * Reads a secret (an admin token) from path into *out (malloc'd; the caller
 * wipes it with sec_wipe and frees it): the file must be a regular file
 * owned by us that neither group nor others may read or write, hold 1 to
 * SEC_SECRET_MAX bytes after one trailing "\n" (or "\r\n") is removed, and
 * contain no NUL or other newline. Returns 0, or -1 with a reason in err
 * (never the secret itself).
 */
int sec_read_secret_file(const char *path, char **out, char *err, size_t errlen);
/*
 * The private-file rule, on the stat of path (lstat: a link is refused): a
 * regular file owned by this process's user with no permission bit for
 * group or others. Returns 0, or -1 with "WHAT PATH: ..." in err naming the
 * mode and owner and the command that fixes it (chmod 600 PATH, or chown).
 */
int sec_check_private_stat(const char *what, const char *path, const struct stat *st, char *err,
                           size_t errlen);
/*
 * May sagad trust what path names, as something only this user or root
 * could have written? path must be absolute. Every directory from / down to
 * the file, and the directories of every symbolic link met on the way (whose
 * targets are followed and checked the same way, at most 16 links), must be
 * owned by this user (euid) or root and not writable by group or others: a
 * directory another user can write lets them swap the entry it holds, and a
 * sticky one such as /tmp is refused too (the sticky bit keeps others from
 * removing an entry, not from having created it first, and a rule with
 * exceptions is one nobody can check by eye). The file itself must be a
 * regular file owned by this user or root, not writable by group or others,
 * and, with want_exec, executable by this user. Returns 0, or -1 with
 * "PATH: what is wrong and what to do" in err.
 */
int sec_check_trusted_path(const char *path, int want_exec, char *err, size_t errlen);
/*
 * Is the directory that holds the socket file socket_path owned by this
 * user or root and writable by nobody else (sticky or not)? Otherwise
 * another user could remove the socket and put their own in its place.
 * Returns 0, or -1 with a reason naming the directory in err.
 */
int sec_check_socket_dir(const char *socket_path, char *err, size_t errlen);
/*
 * Makes the socket file at path mode 0600 without following a symbolic
 * link: path must be a socket owned by this user, checked on the file it
 * names itself (opened with O_PATH | O_NOFOLLOW), so a link put there
 * points nothing at its target. Returns 0, or -1 with a reason in err.
 */
int sec_socket_owner_only(const char *path, char *err, size_t errlen);

/* Constant-time comparison (in the length of b, the expected secret): 1 when equal. */
int sec_equal(const void *a, size_t alen, const void *b, size_t blen);
/* Overwrites n bytes at p with zeros, in a way the compiler keeps. */
void sec_wipe(void *p, size_t n);

#endif
