/*
 * auth_wire.h - the requests between the auth process (server.c) and its clients
 * (remote.c): one SOCK_SEQPACKET datagram each (core/channel.h), the channel type byte
 * naming the request. Payload: a 4-byte request id (host order: both ends are the same
 * binary on the same machine), then NUL-terminated strings. An answer carries the same
 * type and id, a 4-byte return code, then strings. Id 0 is a message without an answer.
 *
 * Each client is of one kind, which the master names when it hands the channel over
 * (SERVER_MSG_AUTH_CLIENT's payload: the SERVER_PROC_* bit as text): a login process's
 * successful LOGIN_PASSWORD, LOGIN_APOP or SASL_STEP that carries a binding (the last
 * request string, "[binding]" below) is answered with a one-time token as the last
 * string; only a mail worker may redeem one (TOKEN_REDEEM). auth.h says why.
 *
 *   type                  request strings                  answer: rc, strings
 *   DOMAIN_IS_LOCAL       domain                           1/0/-1
 *   RESOLVE               address                          1/0/-1, n_local, locals, remotes
 *   USER_LOOKUP           login                            1/0/-1, address, home, quota, enabled
 *   SENDER_ALLOWED        user, mail_from                  1/0
 *   LOGIN_PASSWORD        login, password, [binding]       1/0/-1, user, [token]
 *   LOGIN_APOP            login, timestamp, digest,        1/0/-1, user, [token]
 *                         [binding]
 *   PENALTY_CHECK         ip, account, trusted, service    verdict, delay ms
 *   PENALTY_REPORT        ip, account, trusted, service,   verdict
 *                         success
 *   LOGIN_TOO_SOON        user, delay seconds              1/0 (POP3 LOGIN-DELAY)
 *   SASL_STEP             id, mech, hostname, service, ip, tls, loopback, has_response,
 *                         response, [binding]              status, id, has_challenge,
 *                                                          challenge, user, attempted login,
 *                                                          [token]
 *   SASL_FREE (id 0)      id                               (none)
 *   MECHS (id 0, pushed)  "CSA": CRAM-MD5, SCRAM-SHA-256, APOP available ('1'/'0')
 *   GOODBYE (id 0, pushed) (none): the auth process stops (a reload replacing it) and has
 *                         answered every request it read; a request still unanswered when
 *                         the channel closes was never read and may be sent to the next
 *                         auth process, whatever its type (remote.c)
 *   DOMAIN_LIST           (none)                           0/-1, the local domains in order
 *   TOKEN_REDEEM          token, user, binding             1/0/-1 (mail workers only)
 *   RCPT_LOOKUP           domain, address                  is_local 1/0/-1; when 1:
 *                                                          resolved 1/0/-1; when 1:
 *                                                          "n_local n_remote", locals,
 *                                                          remotes, then per local: found
 *                                                          1/0/-1/2 (2: not looked up) and
 *                                                          when 1 address, home, quota,
 *                                                          enabled (auth_rcpt_lookup)
 *
 * PENALTY_*: the failed-login policy (policy/penalty.h, one table in the auth process for
 * every worker): trusted and success are "1"/"0", the verdict is enum penalty_verdict;
 * the auth process takes the time from its own clock.
 *
 * Both ends treat the other's bytes as untrusted: every string must end inside the
 * payload, counts are checked against what arrived.
 */
#ifndef TERN_AUTH_AUTH_WIRE_H
#define TERN_AUTH_AUTH_WIRE_H

enum auth_msg {
    AUTH_MSG_DOMAIN_IS_LOCAL = 1,
    AUTH_MSG_RESOLVE,
    AUTH_MSG_USER_LOOKUP,
    AUTH_MSG_SENDER_ALLOWED,
    AUTH_MSG_LOGIN_PASSWORD,
    AUTH_MSG_LOGIN_APOP,
    AUTH_MSG_PENALTY_CHECK,
    AUTH_MSG_PENALTY_REPORT,
    AUTH_MSG_LOGIN_TOO_SOON,
    AUTH_MSG_SASL_STEP,
    AUTH_MSG_SASL_FREE,
    AUTH_MSG_MECHS,
    AUTH_MSG_DOMAIN_LIST,
    AUTH_MSG_TOKEN_REDEEM,
    AUTH_MSG_RCPT_LOOKUP,
    AUTH_MSG_GOODBYE,
};

#endif
