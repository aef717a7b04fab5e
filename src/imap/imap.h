/*
 * imap.h - the IMAP4rev1 server session (RFC 3501 and extensions) for CONN_ROLE_IMAP (143)
 * and CONN_ROLE_IMAPS (993), over the shared store and directory.
 */
#ifndef TERN_IMAP_IMAP_H
#define TERN_IMAP_IMAP_H

#include "core/conn.h"

extern const struct conn_protocol imap_protocol;

#endif
