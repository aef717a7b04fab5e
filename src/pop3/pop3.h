/*
 * pop3.h - the POP3 server session (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH)
 * for CONN_ROLE_POP3 (110) and CONN_ROLE_POP3S (995), over the shared store and directory.
 */
#ifndef TERN_POP3_POP3_H
#define TERN_POP3_POP3_H

#include "core/conn.h"

extern const struct conn_protocol pop3_protocol;

#endif
