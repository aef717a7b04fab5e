/*
 * store.h - mailboxes: Maildir++ bodies plus a per-user SQLite index (DESIGN §4).
 *
 * Layout of a user's home (<data_dir>/mail/<domain>/<user>/):
 *   Maildir/{cur,new,tmp}/            INBOX (Dovecot-compatible Maildir++)
 *   Maildir/.<Name>/{cur,new,tmp}/    other mailboxes, '.' as hierarchy separator on disk
 *                                     (IMAP shows '/'; names are modified UTF-7 as sent)
 *   index.db                          mailboxes (uidvalidity, uidnext, highestmodseq,
 *                                     special-use, subscribed), messages (uid, file base
 *                                     name, flags, keywords, size, vsize, internaldate,
 *                                     modseq, cached envelope/bodystructure)
 * Files are stored with LF line ends, named "<time>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<vsize>"
 * plus ":2,<flags>" in cur/ (Dovecot's convention): vsize is the size with CRLF line ends,
 * which is what IMAP RFC822.SIZE and POP3 report. The Maildir is the truth; the index is
 * rebuilt from it: files added or renamed by other programs are found on the next sync
 * and get new UIDs; UIDs are never reused.
 *
 * Durability: store_deliver(), store_mailbox_append() and store_mailbox_copy_uids() return
 * 0 only after every new file and its directory are fsync'd (an acknowledged message is on
 * stable storage); store_mailbox_expunge_uids() (POP3 QUIT, MOVE's originals) fsyncs the
 * folders before it returns. Not fsync'd, as Dovecot's default mail_fsync=optimized:
 * flag changes (store_message_set_flags: a crash can bring back the old flags) and
 * store_mailbox_expunge_uids_unsynced() (IMAP EXPUNGE/CLOSE: a crash can bring back an
 * expunged message, under a new UID). Index commits (SQLite WAL, synchronous=NORMAL) are
 * not flushed; the Maildir is the truth and the next sync repairs the index.
 *
 * Ownership: handles returned here are owned by the caller and released with the matching
 * close/free. Thread rules: BLOCKING functions do file I/O and fsync: call them from the
 * workpool. A struct store_user / store_mailbox is used by one thread at a time (several
 * handles on one user from different sessions are fine: SQLite and rename(2) arbitrate).
 */
#ifndef TERN_STORE_STORE_H
#define TERN_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- delivery (SMTP, sendmail, queue) --------------------------------------------- */

/* The message as received: CRLF line ends, dot-unstuffed, no trace headers yet. Either in
 * memory (data/len) or in a file (fd >= 0, read with pread from offset 0, size bytes). */
struct store_source {
    const char *data;
    size_t len;
    int fd;
    uint64_t size;
};

struct store_target {
    const char *user;         /* canonical "user@domain" */
    const char *home;         /* user's folder, from auth_user */
    uint64_t quota;           /* bytes, 0 = unlimited */
    const char *header;       /* text to prepend for this copy (Return-Path, Delivered-To,
                                 Received...), CRLF or LF line ends, may be NULL */
    const char *mailbox;      /* NULL = INBOX */
    /* out: */
    uint32_t uid;             /* UID assigned in the mailbox */
    int status;               /* 0 delivered, STORE_ERR_* otherwise */
};

enum {
    STORE_OK = 0,
    STORE_ERR_QUOTA = 1, /* over quota: 552 5.2.2 (or 452 4.2.2 with other recipients) */
    STORE_ERR_TEMP = 2,  /* I/O error: 451 4.3.0 */
};

/* BLOCKING. Deliver one message to every target, all or nothing: each copy is written to
 * tmp/ and fsync'd, then all are renamed into new/ and the directories fsync'd, then
 * indexed. Quota is checked first for every target (current usage + this copy).
 * Returns 0 when every copy is durable; otherwise -1, nothing is visible, each target's
 * status says why, and *error_r has the first reason. */
int store_deliver(const struct store_source *src, struct store_target *targets, size_t n,
                  char **error_r);

/* Current usage in bytes of a user (sum of message sizes), -1 on error. Fast (index). */
int64_t store_user_usage(const char *home);

/* Change notifications: delivery, expunge and flag changes publish (user, mailbox) so
 * IDLE/NOOP sessions in this process learn at once. Loop thread only. */
typedef void store_notify_fn(const char *user, const char *mailbox, void *arg);
void *store_notify_subscribe(const char *user, store_notify_fn *fn, void *arg);
void store_notify_unsubscribe(void *subscription);
void store_notify_publish(const char *user, const char *mailbox);
/* Added by the store helper: call once on the loop thread (cli serve, after creating the
 * event base) so publications from workpool threads wake the loop; NULL detaches it again
 * (before event_base_free). 0 or -1. */
struct event_base;
int store_notify_init(struct event_base *base);
/* Several processes: fn gets every event that started in this process (loop thread), to
 * send to the others; events from the others come in through store_notify_publish_remote
 * (loop thread), which notifies this process's subscribers without forwarding. */
typedef void store_notify_forward_fn(const char *user, const char *mailbox);
void store_notify_set_forward(store_notify_forward_fn *fn);
void store_notify_publish_remote(const char *user, const char *mailbox);

/* ---- reading and changing mailboxes (POP3, IMAP) ----------------------------------- */

struct store_user;
struct store_mailbox;

/* System flags as bits; keywords are separate strings. */
enum store_flag {
    STORE_FLAG_SEEN = 1 << 0,
    STORE_FLAG_ANSWERED = 1 << 1,
    STORE_FLAG_FLAGGED = 1 << 2,
    STORE_FLAG_DELETED = 1 << 3,
    STORE_FLAG_DRAFT = 1 << 4,
    STORE_FLAG_RECENT = 1 << 5, /* session-visible only, never stored in the file name */
};

struct store_message {
    uint32_t uid;
    uint64_t size;          /* bytes on disk (LF) */
    uint64_t vsize;         /* bytes with CRLF line ends: RFC822.SIZE, POP3 LIST */
    time_t internaldate;
    unsigned flags;         /* enum store_flag bits */
    char **keywords;        /* NULL-terminated, may be NULL */
    uint64_t modseq;
    char *filename;         /* base name without the ":2,..." suffix */
};

/* BLOCKING. Open a user's store (creates Maildir, index and the special-use mailboxes
 * Drafts, Sent, Trash, Junk, Archive on first use). */
int store_user_open(const char *home, const char *user, struct store_user **user_r,
                    char **error_r);
void store_user_close(struct store_user *u);
/* The user's folder (as given to store_user_open). */
const char *store_user_home(const struct store_user *u);
/* Give the user's index connection back to the shared pool; the next call on u takes one
 * again by itself. Sessions call this when a command is done, so an idle session holds
 * no SQLite connection (memory, two descriptors) and the sessions of one user share the
 * few connections their concurrent commands need. Same thread rules as other calls on u;
 * never while a call on u (or on a view of it) runs. */
void store_user_idle(struct store_user *u);

/* Mailbox tree (IMAP). Names are IMAP names with '/' separator; "INBOX" case-insensitive. */
struct store_mailbox_info {
    char *name;
    const char *special_use; /* "\\Sent" etc. or NULL */
    bool subscribed;
    bool has_children;
    bool noselect;
    bool is_nonexistent; /* only a subscribed name: no such mailbox (noselect too) */
};
int store_mailbox_list(struct store_user *u, struct store_mailbox_info **list_r, size_t *n_r,
                       char **error_r);
void store_mailbox_info_free(struct store_mailbox_info *list, size_t n);
int store_mailbox_create(struct store_user *u, const char *name, char **error_r);
int store_mailbox_delete(struct store_user *u, const char *name, char **error_r);
/* Renaming INBOX moves its messages into the new mailbox and leaves INBOX empty (RFC 3501). */
int store_mailbox_rename(struct store_user *u, const char *from, const char *to,
                         char **error_r);
int store_mailbox_subscribe(struct store_user *u, const char *name, bool subscribe,
                            char **error_r);

struct store_status {
    uint32_t messages, recent, unseen, uidnext, uidvalidity;
    uint64_t size, highestmodseq;
};
int store_mailbox_status(struct store_user *u, const char *name, struct store_status *st_r,
                         char **error_r);

/* BLOCKING. Open a mailbox view and sync it with the Maildir. The view holds the message
 * list as of the last sync: sequence numbers are indexes into it (0-based here). */
int store_mailbox_open(struct store_user *u, const char *name, bool read_only,
                       struct store_mailbox **box_r, char **error_r);
void store_mailbox_close(struct store_mailbox *box);
uint32_t store_mailbox_uidvalidity(const struct store_mailbox *box);
uint32_t store_mailbox_uidnext(const struct store_mailbox *box);
uint64_t store_mailbox_highestmodseq(const struct store_mailbox *box);
size_t store_mailbox_count(const struct store_mailbox *box);
/* Borrowed pointer, valid until the next sync/expunge on this view. */
const struct store_message *store_mailbox_message(const struct store_mailbox *box, size_t i);

/* What a sync found since the view's last sync (IMAP untagged EXPUNGE/EXISTS/FETCH). */
struct store_sync_changes {
    uint32_t *expunged_seqs; /* 1-based sequence numbers as EXPUNGE must report them, in order */
    uint32_t *expunged_uids; /* the same messages' UIDs (QRESYNC VANISHED), in that order */
    size_t n_expunged;
    size_t *flag_changed;     /* 0-based indexes (after expunges) whose flags changed */
    size_t n_flag_changed;
    size_t n_new;             /* messages appended at the end */
};
/* BLOCKING. Re-read index and Maildir; apply changes made by other sessions/programs. */
int store_mailbox_sync(struct store_mailbox *box, struct store_sync_changes *changes_r,
                       char **error_r);
void store_sync_changes_free(struct store_sync_changes *c);
/* Several views of one mailbox synced one after the other on one thread (the IMAP IDLE
 * sessions one change woke): the first does the round as store_mailbox_sync() does and
 * the share keeps its result; every later view in the state the first one started from
 * gets a copy of it, without the index or a folder scan; any other view syncs as usual
 * (and its round is kept instead). \Recent goes to the first read-write view only
 * (RFC 3501 §2.3.2). A share belongs to one thread at a time; NULL share = plain sync. */
struct store_sync_share;
/* The view's folder (unique per user and mailbox): what groups views for a share. */
const char *store_mailbox_folder(const struct store_mailbox *box);
struct store_sync_share *store_sync_share_new(void);
void store_sync_share_free(struct store_sync_share *share);
int store_mailbox_sync_shared(struct store_mailbox *box, struct store_sync_share *share,
                              struct store_sync_changes *changes_r, char **error_r);
/* BLOCKING. SELECT/EXAMINE of the mailbox this view already shows (name compared as the
 * store canonicalises it, same read_only): bring the view to the state
 * store_mailbox_open() would give a new one (\Recent only on what this call claims),
 * reading only what changed since its last sync. 0 done; 1 not the same mailbox or mode
 * (close it and open the other); -1 error (the view is still valid as before; close it
 * and open anew, which reports the reason). */
int store_mailbox_reopen(struct store_mailbox *box, const char *name, bool read_only,
                         char **error_r);

/* BLOCKING. RFC 7162 QRESYNC: the UIDs (ascending, malloc'd) expunged from this mailbox
 * after mod-sequence modseq and no longer in the view, from the index's tombstones; for a
 * modseq older than the tombstones reach, every UID below UIDNEXT the view lacks (a
 * superset the RFC allows). 0 or -1. */
int store_mailbox_vanished(struct store_mailbox *box, uint64_t modseq, uint32_t **uids_r,
                           size_t *n_r, char **error_r);

/* BLOCKING. Open a message's file for reading (LF line ends on disk). Caller closes fd.
 * On failure errno is ENOENT when the message was expunged (by another session or
 * program), anything else for an I/O error. */
int store_message_open(struct store_mailbox *box, size_t i, int *fd_r, char **error_r);

/* BLOCKING. Set flags/keywords of message i: mode 0 = replace, 1 = add, -1 = remove.
 * Renames the file (":2,<flags>"), updates the index and modseq, publishes a notification. */
int store_message_set_flags(struct store_mailbox *box, size_t i, int mode, unsigned flags,
                            const char *const *keywords, char **error_r);
/* BLOCKING. The same, applied to the flags the index has now (another session's change
 * since this view's last sync is kept, and the view takes the result), and only if the
 * message's modseq is <= unchangedsince (RFC 7162 UNCHANGEDSINCE; UINT64_MAX = always).
 * 0 stored (or nothing to change), 1 not stored (modified since), 2 not stored: the
 * message was expunged by another session or program meanwhile, -1 error. */
int store_message_store_flags(struct store_mailbox *box, size_t i, int mode, unsigned flags,
                              const char *const *keywords, uint64_t unchangedsince,
                              char **error_r);

/* BLOCKING. Remove the messages with these UIDs (unlink, fsync the directory, delete from
 * the index) and publish a notification. Durable before return. Only UIDs in this view are
 * touched. The view keeps listing them until the next store_mailbox_sync(), which reports
 * them in expunged_seqs (so IMAP sends EXPUNGE from one place). */
int store_mailbox_expunge_uids(struct store_mailbox *box, const uint32_t *uids, size_t n,
                               char **error_r);
/* BLOCKING. The same without the fsync of the folders (IMAP EXPUNGE, CLOSE): visible to
 * every session and program at once, but a crash soon after can bring a message back. */
int store_mailbox_expunge_uids_unsynced(struct store_mailbox *box, const uint32_t *uids, size_t n,
                                        char **error_r);

/* BLOCKING. APPEND: store a message (CRLF or LF) with flags and date into mailbox name.
 * *uid_r gets the new UID, *uidvalidity_r the mailbox's. Durable before return. */
int store_mailbox_append(struct store_user *u, const char *name, const struct store_source *src,
                         unsigned flags, const char *const *keywords, time_t internaldate,
                         uint32_t *uidvalidity_r, uint32_t *uid_r, char **error_r);
/* One message of a MULTIAPPEND (RFC 3502): its bytes, flags, keywords and date. */
struct store_append_message {
    struct store_source src;
    unsigned flags;
    const char *const *keywords;
    time_t internaldate; /* 0: now */
};
/* BLOCKING. MULTIAPPEND (RFC 3502 §6.3.11): store n messages into mailbox name, all or
 * none. Every file is written and fsync'd in tmp/, then all are renamed into cur/ and the
 * folder fsync'd, then all are indexed in one transaction; on any failure nothing stays.
 * uids_r (n entries, caller's) gets the new UIDs in order, *uidvalidity_r the mailbox's.
 * A missing mailbox fails with "[TRYCREATE] Mailbox doesn't exist". quota (bytes, 0 none)
 * is checked inside the indexing transaction against the user's usage, so concurrent
 * appends cannot overrun it together; over it fails with "[OVERQUOTA] ..." and nothing
 * stays. Durable before return. */
int store_mailbox_append_many(struct store_user *u, const char *name,
                              const struct store_append_message *msgs, size_t n, uint64_t quota,
                              uint32_t *uidvalidity_r, uint32_t *uids_r, char **error_r);
/* BLOCKING. COPY (move=false) or MOVE (move=true) messages by UID into another mailbox;
 * dest_uids_r (malloc'd, n entries) for COPYUID: entry k is 0 when uids[k] was not in the
 * view (skip it). A missing destination fails with "[TRYCREATE] Mailbox doesn't exist".
 * MOVE expunges the originals like store_mailbox_expunge_uids (reported by the next sync). */
int store_mailbox_copy_uids(struct store_mailbox *box, const uint32_t *uids, size_t n,
                            const char *dest, bool move, uint32_t *dest_uidvalidity_r,
                            uint32_t **dest_uids_r, char **error_r);

/* Cached ENVELOPE / BODYSTRUCTURE text of a message (IMAP), NULL when not cached yet.
 * Caller frees. store_message_set_cache() records them (BLOCKING). */
char *store_message_get_cache(struct store_mailbox *box, size_t i, const char *field);
int store_message_set_cache(struct store_mailbox *box, size_t i, const char *field,
                            const char *value);

/* BLOCKING. SORT/THREAD keys (mime.h struct mime_sort_keys) of every message of the
 * view: keys_r gets store_mailbox_count() entries by view index, sent resolved (the
 * internal date when the message has no usable Date:). Keys are cached in the index;
 * messages with want[i] false (want NULL: none) are not computed when not cached yet
 * (their entries may be empty). Free with store_sort_keys_free(). */
struct mime_sort_keys;
int store_mailbox_sort_keys(struct store_mailbox *box, const bool *want,
                            struct mime_sort_keys **keys_r, char **error_r);
void store_sort_keys_free(struct mime_sort_keys *keys, size_t n);

/* RFC 5464 METADATA: entries of a mailbox (mailbox "" for the server), names as the
 * client gave them after validation (lower-cased, "/private/..." or "/shared/..."). */
#define STORE_METADATA_MAX_VALUE   16384 /* bytes of one value (a literal of a command
                                            other than APPEND is at most 64 KiB anyway) */
#define STORE_METADATA_MAX_ENTRIES 1000  /* entries per user, all mailboxes */
struct store_metadata {
    char *name;
    char *value; /* len bytes, NUL-terminated for convenience */
    size_t len;
};
/* BLOCKING. Set (value) or remove (value NULL) an entry. 0 done; 1 refused by a limit
 * (*error_r starts with the "[METADATA MAXSIZE n]"/"[METADATA TOOMANY]" code); -1 error
 * (no such mailbox, I/O). */
int store_metadata_set(struct store_user *u, const char *mailbox, const char *name,
                       const char *value, size_t len, char **error_r);
/* BLOCKING. The entry name and every entry below it ("name/..."), by name. */
int store_metadata_get(struct store_user *u, const char *mailbox, const char *name,
                       struct store_metadata **entries_r, size_t *n_r, char **error_r);
void store_metadata_free(struct store_metadata *entries, size_t n);

/* RFC 4467 URLAUTH mailbox access keys (urlauth.c): secret random bytes per mailbox,
 * bound to its name and UIDVALIDITY, in the user's index. BLOCKING. store_urlauth_key:
 * the mailbox's key into key_r and its UIDVALIDITY (made now when create and none yet):
 * 1 found or made, 0 none (create false), -1 error or no such mailbox.
 * store_urlauth_reset: forget the key of mailbox (NULL: every key of the user); 0 or -1. */
#define STORE_URLAUTH_KEY_SIZE 32
int store_urlauth_key(struct store_user *u, const char *mailbox, bool create,
                      unsigned char key_r[STORE_URLAUTH_KEY_SIZE], uint32_t *uidvalidity_r,
                      char **error_r);
int store_urlauth_reset(struct store_user *u, const char *mailbox, char **error_r);
/* POP3 maildrop lock: one POP3 session per user at a time (RFC 1939 §8). 0 locked,
 * 1 already in use (-ERR [IN-USE]), -1 error. Released by store_pop3_unlock or process exit. */
int store_pop3_lock(struct store_user *u);
void store_pop3_unlock(struct store_user *u);

#endif
