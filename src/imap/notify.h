/*
 * notify.h - what a NOTIFY command (RFC 5465 §3.1, §8) asks for, taken from the parser's
 * argument tree. Pure (no I/O, no session): the unit tests and fuzz_imap_command reach it
 * directly; the session side (event queue, jobs, responses) is in notify.c too and
 * declared in session.h.
 *
 * Bounds: at most IMAP_NOTIFY_MAX_GROUPS event groups, IMAP_NOTIFY_MAX_NAMES mailbox names
 * per group.
 *
 * Ownership: a request points into the argument tree (valid until imap_parser_reset).
 * Thread rules: none.
 */
#ifndef TERN_IMAP_NOTIFY_H
#define TERN_IMAP_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

#include "imap/parse.h"

#define IMAP_NOTIFY_MAX_GROUPS 16
#define IMAP_NOTIFY_MAX_NAMES  64

/* RFC 5465 §6 mailbox specifiers */
enum imap_notify_filter {
    IMAP_NOTIFY_SELECTED,
    IMAP_NOTIFY_SELECTED_DELAYED,
    IMAP_NOTIFY_INBOXES,
    IMAP_NOTIFY_PERSONAL,
    IMAP_NOTIFY_SUBSCRIBED,
    IMAP_NOTIFY_SUBTREE,
    IMAP_NOTIFY_MAILBOXES,
};

/* RFC 5465 §5 events this server sends (AnnotationChange needs ANNOTATE: refused with
 * BADEVENT, as any unknown event is) */
enum {
    IMAP_NOTIFY_MESSAGE_NEW = 1,
    IMAP_NOTIFY_MESSAGE_EXPUNGE = 2,
    IMAP_NOTIFY_FLAG_CHANGE = 4,
    IMAP_NOTIFY_MAILBOX_NAME = 8,
    IMAP_NOTIFY_SUBSCRIPTION_CHANGE = 16,
    IMAP_NOTIFY_MAILBOX_METADATA_CHANGE = 32,
    IMAP_NOTIFY_SERVER_METADATA_CHANGE = 64,
};
#define IMAP_NOTIFY_MESSAGE_EVENTS                                                                 \
    (IMAP_NOTIFY_MESSAGE_NEW | IMAP_NOTIFY_MESSAGE_EXPUNGE | IMAP_NOTIFY_FLAG_CHANGE)
/* the BADEVENT list (RFC 5465 §3.1: every event the server supports) */
#define IMAP_NOTIFY_EVENT_NAMES                                                                    \
    "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange "                         \
    "MailboxMetadataChange ServerMetadataChange"

struct imap_notify_group {
    enum imap_notify_filter filter;
    const struct imap_arg *names[IMAP_NOTIFY_MAX_NAMES]; /* SUBTREE / MAILBOXES */
    size_t n_names;
    unsigned events;                  /* IMAP_NOTIFY_*; 0 for NONE */
    const struct imap_arg *fetch_att; /* MessageNew's (fetch-att ...) list, or NULL */
};

struct imap_notify_request {
    bool is_none;    /* NOTIFY NONE */
    bool has_status; /* NOTIFY SET STATUS */
    struct imap_notify_group groups[IMAP_NOTIFY_MAX_GROUPS];
    size_t n_groups;
};

enum imap_notify_parse_result {
    IMAP_NOTIFY_PARSE_OK,
    IMAP_NOTIFY_PARSE_BAD,      /* syntax or a rule of §5/§6.1 broken: tagged BAD */
    IMAP_NOTIFY_PARSE_BADEVENT, /* an event this server does not send: NO [BADEVENT] */
};

/* NOTIFY NONE | NOTIFY SET [STATUS] event-group *(SP event-group); *error_r says why when
 * not OK. The fetch-att list is only checked to be a list here (the session checks its
 * items with the FETCH parser). */
enum imap_notify_parse_result imap_notify_parse(const struct imap_arg *args, size_t n,
                                                struct imap_notify_request *r,
                                                const char **error_r);

#endif
