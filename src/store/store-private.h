/*
 * store-private.h - internals shared by the store's files (and by queue/, which reuses
 * the durable-write helpers). Not a contract for other modules.
 *
 * Index schema (index.db in the user's home, SQLite WAL):
 *   meta(key TEXT PRIMARY KEY, value TEXT)
 *       "specials" = "1" once the special-use mailboxes were created,
 *       "last_uidvalidity" = the highest UIDVALIDITY handed out (never reused).
 *   mailboxes(id INTEGER PRIMARY KEY, name TEXT UNIQUE (IMAP name, '/' separated),
 *       uidvalidity, uidnext, highestmodseq, special_use TEXT, subscribed INTEGER,
 *       first_recent_uid INTEGER (first UID no writable view has claimed as \Recent yet),
 *       cur_mtime INTEGER, new_mtime INTEGER (ns; directory mtimes the index is known to
 *       match, negative while too young to trust: see sync.c))
 *   messages(mailbox INTEGER, uid INTEGER, basename TEXT, location TEXT ("new/<file>" or
 *       "cur/<file>:2,<flags>"), flags INTEGER, keywords TEXT (space separated), size,
 *       vsize, internaldate, modseq, envelope TEXT, bodystructure TEXT,
 *       PRIMARY KEY(mailbox, uid), UNIQUE(mailbox, basename))
 *   cache(mailbox, uid, field, value, PRIMARY KEY(mailbox, uid, field))  other cached fields
 *   subscriptions(name TEXT PRIMARY KEY)  subscribed names (version 3), existing or not
 *   sortkeys(mailbox, uid, sent, is_reply, subject, from_, to_, cc, dfrom, dto, msgid, refs,
 *       PRIMARY KEY(mailbox, uid))  SORT/THREAD keys (version 3, sortkeys.c)
 *   expunged(mailbox, uid, modseq, PRIMARY KEY(mailbox, uid))  tombstones for QRESYNC
 *       (version 3): every expunge above mailboxes.vanished_since is recorded; about
 *       STORE_TOMBSTONES_MAX per mailbox at most (older ones pruned, vanished_since raised)
 *   metadata(mailbox TEXT ("" server), name TEXT, value BLOB)  RFC 5464 (version 3)
 */
#ifndef TERN_STORE_STORE_PRIVATE_H
#define TERN_STORE_STORE_PRIVATE_H

#include "store/store.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <sys/types.h>

/* Bounds on what clients can make us store. */
#define STORE_MAX_KEYWORDS      64    /* per message */
#define STORE_MAX_KEYWORD_BYTES 4096  /* per message, all keywords together */
#define STORE_MAX_MAILBOXES     10000 /* per user */

/* ---- fault injection (tests): NULL means the real system call ---------------------- */
extern ssize_t (*store_io_write_hook)(int fd, const void *data, size_t len);
extern int (*store_io_fsync_hook)(int fd);
/* Called with every index connection the store opens (tests trace its statements). */
extern void (*store_index_open_hook)(sqlite3 *db);
/* The clock of the tmp/ debris cleanup at login (tests move it forward). */
extern time_t (*store_clock_hook)(void);

/* write(2) all bytes through the hook; 0 or -1 (errno set). */
int store_io_write_all(int fd, const void *data, size_t len);
/* fsync(2) through the hook. */
int store_io_fsync(int fd);
/* Open and fsync a directory. */
int store_io_fsync_dir(const char *dir);
/* Make durable the entries this thread has already made in dir (a rename into new/),
 * sharing one fsync with other threads of the process that wait for the same directory
 * (group commit): returns once an fsync of dir that began after the call has succeeded
 * (0), or -1 (errno set) when the one that covers us failed. Any thread; blocks. */
int store_io_fsync_dir_shared(const char *dir);
/* FNV-1a of a path (homes, folders): the slot of the per-path tables (index pool, shared
 * directory fsyncs, index batches). */
uint32_t store_path_hash(const char *path);
/* mkdir -p (mode 0700); 0 or -1. */
int store_io_mkdir_p(const char *path);

/* Set *error_r (if error_r) to a malloc'd formatted message. */
void store_error(char **error_r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A unique Maildir base name without S=/W=: "<sec>.M<usec>P<pid>Q<n>.<host>". */
void store_maildir_unique_name(char *out, size_t size);

/* Read a whole file of at most max bytes (a NUL is added after it). 0 read, 1 absent
 * (ENOENT), -1 error or larger than max (reason in *error_r). Symlinks are not followed. */
int store_io_read_file(const char *path, size_t max, char **data_r, size_t *len_r,
                       char **error_r);

/* Write header (may be NULL) then the source, converting CRLF to LF, to fd; counts the
 * bytes written (size, LF) and the CRLF size (vsize). Streams in chunks. 0 or -1. */
int store_io_write_message(int fd, const char *header, const struct store_source *src,
                           uint64_t *size_r, uint64_t *vsize_r, char **error_r);
/* Write header then the source as-is (no conversion; the queue keeps CRLF). 0 or -1. */
int store_io_write_raw(int fd, const char *header, const struct store_source *src, uint64_t *size_r,
                       char **error_r);
/* Size of a source in bytes. */
uint64_t store_source_size(const struct store_source *src);

/* ---- Maildir names ----------------------------------------------------------------- */
/* Flag letters of a file name's ":2," part -> STORE_FLAG_* bits. */
unsigned store_maildir_flags_parse(const char *info);
/* Build "<base>:2,<letters>" into out, keeping unknown letters of old_info (may be NULL). */
int store_maildir_name_with_flags(const char *base, unsigned flags, const char *old_info, char *out,
                                  size_t size);
/* Parse ",S=<n>" and ",W=<n>" from a base name; false if absent. */
bool store_maildir_name_size(const char *base, char key, uint64_t *value_r);
/* Validate an IMAP mailbox name and map it to the on-disk directory below Maildir
 * ("" for INBOX, ".A.B" for "A/B"). Canonical IMAP name into canon. 0 or -1. */
int store_mailbox_name_to_dir(const char *name, char *dir, size_t dir_size, char *canon,
                              size_t canon_size, char **error_r);
/* Full path of a mailbox directory: <home>/Maildir/<dir>. */
int store_mailbox_path(const char *home, const char *canon_name, char *out, size_t size);
/* Create <path>/{cur,new,tmp} (and maildirfolder for non-INBOX). 0 or -1. */
int store_maildir_create(const char *path, bool is_inbox);

/* ---- index ------------------------------------------------------------------------- */
/* The trigger that keeps usage(bytes, messages) up to date on insert (schema in index.c);
 * a large first build drops it inside its transaction and adds the sums once (sync.c). */
#define STORE_INDEX_USAGE_ADD_TRIGGER                                                       \
    "CREATE TRIGGER IF NOT EXISTS usage_add AFTER INSERT ON messages BEGIN"                \
    " UPDATE usage SET bytes = bytes + NEW.size, messages = messages + 1 WHERE id = 1; END;"
/* Open (creating) <home>/index.db with the schema. */
sqlite3 *store_index_open(const char *home, char **error_r);
/* Take an idle pooled connection to <home>/index.db (or open one); give it back with
 * store_index_release (outside any transaction). */
sqlite3 *store_index_acquire(const char *home, char **error_r);
void store_index_release(const char *home, sqlite3 *db);
/* Close every pooled connection (tests; before a user's files are removed). */
void store_index_pool_flush(void);
/* Close a connection: finalizes its cached statements first (sqlite3_close alone fails
 * on a connection that still has statements). */
void store_index_close(sqlite3 *db);
int store_index_exec(sqlite3 *db, const char *sql, char **error_r);
/* Statement cache (stmt.c), for static SQL text only (bounded number per connection):
 * a not-busy statement of db with the same text, or a new persistent one. Returns an
 * SQLite result code (SQLITE_OK with *st_r set). Give it back with store_index_done on
 * every path (reset + clear bindings) instead of sqlite3_finalize: an un-reset statement
 * keeps an old read snapshot and blocks WAL checkpoints. NULL is accepted. */
int store_index_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st_r);
void store_index_done(sqlite3_stmt *st);
/* Prepare (cached), step to completion and give back a static statement without
 * parameters; 0 or -1. */
int store_index_step_static(sqlite3 *db, const char *sql, char **error_r);
/* Begin an IMMEDIATE transaction (write lock now, waits on busy_timeout). */
int store_index_begin(sqlite3 *db, char **error_r);
int store_index_commit(sqlite3 *db, char **error_r);
void store_index_rollback(sqlite3 *db);

struct store_mbox_row {
    int64_t id;
    uint32_t uidvalidity, uidnext, first_recent_uid;
    uint64_t highestmodseq;
    int64_t cur_mtime, new_mtime;
    int64_t user_bytes; /* the user's usage (all mailboxes) read with the row, -1 unknown */
};
/* Look up a mailbox row by canonical name: 0 found, 1 absent, -1 error. */
int store_index_mailbox_get(sqlite3 *db, const char *name, struct store_mbox_row *row_r,
                            char **error_r);
/* Insert a mailbox row with a fresh UIDVALIDITY (inside a transaction). */
int store_index_mailbox_add(sqlite3 *db, const char *name, const char *special_use,
                            struct store_mbox_row *row_r, char **error_r);
/* Record that uid of mailbox was expunged at modseq (QRESYNC tombstone; inside the
 * transaction that deletes the row). 0 or -1. */
int store_index_tombstone_add(sqlite3 *db, int64_t mailbox, uint32_t uid, uint64_t modseq,
                              char **error_r);
/* QRESYNC tombstones are bounded (Dovecot keeps expunges only as far back as its
 * transaction log reaches): a mailbox with more than STORE_TOMBSTONES_MAX keeps the newest
 * STORE_TOMBSTONES_KEEP (whole mod-sequences), and mailboxes.vanished_since rises to the
 * highest mod-sequence dropped, below which VANISHED (EARLIER) answers with every UID the
 * view lacks. Inside the transaction that added tombstones; 0 or -1. */
#define STORE_TOMBSTONES_MAX  10000
#define STORE_TOMBSTONES_KEEP 7500
int store_index_tombstones_prune(sqlite3 *db, int64_t mailbox, size_t max, size_t keep,
                                 char **error_r);
/* The same, amortised: the count (a scan of up to STORE_TOMBSTONES_MAX rows, ~0.5 ms) runs
 * when the transaction's mod-sequence is a multiple of STORE_TOMBSTONES_CHECK or it added
 * that many tombstones, so a mailbox holds at most STORE_TOMBSTONES_MAX +
 * STORE_TOMBSTONES_CHECK^2 of them between checks. */
#define STORE_TOMBSTONES_CHECK 32
int store_index_tombstones_bound(sqlite3 *db, int64_t mailbox, uint64_t modseq, size_t n_added,
                                 char **error_r);
/* Subscribe (insert) or unsubscribe (delete) a canonical name; 0 or -1. */
int store_index_subscription_set(sqlite3 *db, const char *name, bool subscribe, char **error_r);
/* Get or create the row and the Maildir folder of a mailbox (own transaction). */
int store_index_mailbox_ensure(sqlite3 *db, const char *home, const char *name,
                               struct store_mbox_row *row_r, char **error_r);
/* Add a message row with uid = uidnext++ and modseq = ++highestmodseq (inside a
 * transaction; row is updated). If basename is already indexed returns that uid. */
int store_index_message_add(sqlite3 *db, struct store_mbox_row *row, const char *basename,
                            const char *location, unsigned flags, const char *keywords,
                            uint64_t size, uint64_t vsize, time_t internaldate, uint32_t *uid_r,
                            char **error_r);
/* Write uidnext/highestmodseq of row back (inside a transaction). */
int store_index_mailbox_save(sqlite3 *db, const struct store_mbox_row *row, char **error_r);
/* Sum of message sizes of the user, -1 on error. */
int64_t store_index_usage(sqlite3 *db);

/* ---- user handle ------------------------------------------------------------------- */
struct store_user {
    char *home;
    char *user;
    sqlite3 *db; /* NULL while idle (store_user_idle); store_user_attach takes one */
    bool has_pop3_lock;
    int pop3_lock_fd;
};

/* Make sure u->db is a connection (from the pool): every public function that uses
 * u->db calls this first. 0, or -1 with the reason. */
int store_user_attach(struct store_user *u, char **error_r);

/* Find a mailbox by IMAP name: canonical name, folder path and index row. A folder made
 * by another program (no row yet) gets a row. 0, or -1 with "Mailbox doesn't exist: NAME"
 * when absent. */
int store_mailbox_lookup(struct store_user *u, const char *name, char *canon_r, size_t canon_size,
                         char *path_r, size_t path_size, struct store_mbox_row *row_r,
                         char **error_r);
/* Inside a transaction: bring the index of one mailbox in line with its folder (new files
 * get UIDs, vanished files are deleted, renamed flags are taken over), optionally moving
 * new/ to cur/. row must be fresh (read inside the transaction); it is updated and saved. */
int store_sync_locked(struct store_user *u, const char *path, struct store_mbox_row *row,
                      bool move_new, char **error_r);
/* Inside a transaction, on a mailbox that never gave out a UID (row->uidnext == 1):
 * when its folder holds a dovecot-uidlist (a Maildir moved in from Dovecot), take over
 * its UIDVALIDITY, next UID and UIDs, the keywords of dovecot-keywords and the POP3 UIDL
 * and GUID fields, and index the folder with them (dovecot.h). A malformed file is
 * logged once and left alone (the next sync hands out fresh UIDs). 0, or -1 on an index
 * error. */
int store_sync_import_dovecot(sqlite3 *db, const char *path, struct store_mbox_row *row,
                              char **error_r);
/* mtime (ns) of a directory, 0 if it cannot be read. */
int64_t store_sync_dir_mtime(const char *dir);
/* After our own change to a folder (rename/unlink/link), inside the transaction that
 * records it in the index: before/after are the folder's mtimes around the change, recorded
 * the row's cur_mtime or new_mtime. Lets the next sync skip re-reading the folder. */
void store_sync_own_change(int64_t *recorded, int64_t before, int64_t after);
/* Locate the current file of a message by base name (scan cur/ and new/) into location
 * ("cur/<name>" or "new/<name>"). 0 found, 1 gone, -1 error. */
int store_maildir_locate(const char *path, const char *basename, char *location, size_t size);

/* View internals for copy.c. */
size_t store_view_find_uid(const struct store_mailbox *box, uint32_t uid); /* or SIZE_MAX */
const char *store_view_path(const struct store_mailbox *box);
const char *store_view_name(const struct store_mailbox *box);
struct store_user *store_view_user(const struct store_mailbox *box);
int64_t store_view_mailbox_id(const struct store_mailbox *box);
/* Current path of message i's file (re-located if another session renamed it). */
int store_view_file_path(struct store_mailbox *box, size_t i, char *out, size_t size);

/* Called by the view code after a change so IDLE sessions learn of it (any thread). */
void store_notify_publish_any_thread(const char *user, const char *mailbox);

/* Keywords: NULL-terminated vector <-> space separated text. */
char **store_keywords_parse(const char *text);
char *store_keywords_join(const char *const *kw);
void store_keywords_free(char **kw);
/* A copy of a NULL-terminated keyword list; NULL for none, or when out of memory with
 * kw non-empty. */
char **store_keywords_copy(char *const *kw);

#endif
