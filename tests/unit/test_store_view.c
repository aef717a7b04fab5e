/*
 * test_store_view.c - unit tests of a mailbox view's incremental sync (issue 4): a sync
 * reads only what changed since the view's last one, store_mailbox_reopen() brings an open
 * view to the state a fresh open gives, and IMAP's unsynced expunge skips the folder fsync.
 * Each result is checked against a view loaded from scratch, which reads every row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store-private.h"
#include "store/store.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_tmpdir.h"
#include "test_store_util.h"

static int setup(void **state)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tern-test-view-XXXXXX");
    if (!mkdtemp(tmp_root))
        return -1;
    store_io_fsync_hook = NULL;
    return 0;
}

static int teardown(void **state)
{
    store_io_fsync_hook = NULL;
    store_index_pool_flush();
    rm_rf(tmp_root, 0);
    return 0;
}

static const char msg_crlf[] = TEST_STORE_MSG_CRLF;

static void append_n(struct store_user *u, size_t n)
{
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    for (size_t i = 0; i < n; i++) {
        uint32_t uidv = 0, uid = 0;
        assert_int_equal(
            store_mailbox_append(u, "INBOX", &src, 0, NULL, 1700000000, &uidv, &uid, NULL), 0);
    }
}

static size_t n_keywords(char **kw)
{
    size_t n = 0;
    while (kw && kw[n])
        n++;
    return n;
}

/* The view must list exactly what a view loaded from scratch lists (\Recent aside). */
static void assert_view_matches_index(struct store_user *u, struct store_mailbox *box)
{
    struct store_mailbox *fresh = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", true, &fresh, &error), 0);
    assert_int_equal(store_mailbox_count(box), store_mailbox_count(fresh));
    for (size_t i = 0; i < store_mailbox_count(fresh); i++) {
        const struct store_message *a = store_mailbox_message(box, i);
        const struct store_message *b = store_mailbox_message(fresh, i);
        assert_int_equal(a->uid, b->uid);
        assert_int_equal(a->flags & ~(unsigned)STORE_FLAG_RECENT,
                         b->flags & ~(unsigned)STORE_FLAG_RECENT);
        assert_int_equal(n_keywords(a->keywords), n_keywords(b->keywords));
        for (size_t k = 0; k < n_keywords(b->keywords); k++)
            assert_string_equal(a->keywords[k], b->keywords[k]);
        assert_string_equal(a->filename, b->filename);
        assert_int_equal(a->size, b->size);
        assert_int_equal(a->vsize, b->vsize);
        assert_int_equal(a->modseq, b->modseq);
    }
    assert_int_equal(store_mailbox_uidnext(box), store_mailbox_uidnext(fresh));
    assert_int_equal(store_mailbox_highestmodseq(box), store_mailbox_highestmodseq(fresh));
    store_mailbox_close(fresh);
}

static void test_view_delta_sync(void **state)
{
    char home[512];
    struct store_user *u = open_user("vera", home, sizeof home);
    deliver_n(home, 6);
    struct store_mailbox *a = NULL, *b = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &a, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &b, &error), 0);

    /* nothing changed: nothing reported */
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(a, &ch, &error), 0);
    assert_int_equal(ch.n_new + ch.n_expunged + ch.n_flag_changed, 0);
    store_sync_changes_free(&ch);

    /* another session: flags and a keyword on UID 2, expunge UIDs 1 and 4, two APPENDs */
    const char *kw[] = {"$Label1", NULL};
    assert_int_equal(store_message_set_flags(b, 1, 1, STORE_FLAG_FLAGGED, kw, &error), 0);
    uint32_t gone[] = {1, 4};
    assert_int_equal(store_mailbox_expunge_uids_unsynced(b, gone, 2, &error), 0);
    append_n(u, 2);

    /* QRESYNC tombstones: a view that has not synced yet still shows UIDs 1 and 4, so
     * they are not "vanished" for it yet; b no longer shows them */
    uint64_t before = store_mailbox_highestmodseq(a);
    uint32_t *van = NULL;
    size_t n_van = 0;
    assert_int_equal(store_mailbox_vanished(a, before, &van, &n_van, &error), 0);
    assert_int_equal(n_van, 0);
    free(van);
    assert_int_equal(store_mailbox_sync(a, &ch, &error), 0);
    /* RFC 3501 §7.4.1: UID 1 at seq 1, then UID 4 at seq 3 once UID 1 is gone */
    assert_int_equal(ch.n_expunged, 2);
    assert_int_equal(ch.expunged_seqs[0], 1);
    assert_int_equal(ch.expunged_seqs[1], 3);
    assert_int_equal(ch.expunged_uids[0], 1);
    assert_int_equal(ch.expunged_uids[1], 4);
    assert_int_equal(store_mailbox_vanished(a, before, &van, &n_van, &error), 0);
    assert_int_equal(n_van, 2);
    assert_int_equal(van[0], 1);
    assert_int_equal(van[1], 4);
    free(van);
    /* after the expunge's own mod-sequence nothing more vanished */
    assert_int_equal(store_mailbox_vanished(a, store_mailbox_highestmodseq(a), &van, &n_van,
                                            &error),
                     0);
    assert_int_equal(n_van, 0);
    free(van);
    assert_int_equal(ch.n_new, 2);
    assert_int_equal(ch.n_flag_changed, 1);
    assert_int_equal(ch.flag_changed[0], 0); /* UID 2, first after the expunges */
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(a), 6);
    const uint32_t want[] = {2, 3, 5, 6, 7, 8};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(store_mailbox_message(a, i)->uid, want[i]);
    assert_true(store_mailbox_message(a, 0)->flags & STORE_FLAG_FLAGGED);
    /* the appended messages are \Recent for the view that first synced them */
    assert_true(store_mailbox_message(a, 4)->flags & STORE_FLAG_RECENT);
    assert_true(store_mailbox_message(a, 5)->flags & STORE_FLAG_RECENT);
    assert_view_matches_index(u, a);

    /* our own flag change is not reported back to us; another session's is */
    assert_int_equal(store_message_set_flags(a, 2, 1, STORE_FLAG_SEEN, NULL, &error), 0);
    assert_int_equal(store_mailbox_sync(a, &ch, &error), 0);
    assert_int_equal(ch.n_new + ch.n_expunged + ch.n_flag_changed, 0);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_sync(b, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 2);
    assert_int_equal(ch.n_new, 2);
    assert_int_equal(ch.n_flag_changed, 1);
    assert_int_equal(store_mailbox_message(b, ch.flag_changed[0])->uid, 5);
    assert_true(store_mailbox_message(b, ch.flag_changed[0])->flags & STORE_FLAG_SEEN);
    store_sync_changes_free(&ch);
    assert_view_matches_index(u, a);
    assert_view_matches_index(u, b);

    /* expunge everything from b: a sees every message go, in order */
    uint32_t all[6];
    for (size_t i = 0; i < 6; i++)
        all[i] = store_mailbox_message(b, i)->uid;
    assert_int_equal(store_mailbox_expunge_uids(b, all, 6, &error), 0);
    assert_int_equal(store_mailbox_sync(a, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 6);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(ch.expunged_seqs[i], 1);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(a), 0);
    append_n(u, 1);
    assert_int_equal(store_mailbox_sync(a, &ch, &error), 0);
    assert_int_equal(ch.n_new, 1);
    store_sync_changes_free(&ch);
    assert_view_matches_index(u, a);
    store_mailbox_close(a);
    store_mailbox_close(b);
    store_user_close(u);
}

/* The changes of one sync as a comparable string. */
static void changes_text(const struct store_sync_changes *ch, char *out, size_t size)
{
    size_t o = (size_t)snprintf(out, size, "new %zu exp", ch->n_new);
    for (size_t i = 0; i < ch->n_expunged && o < size; i++)
        o += (size_t)snprintf(out + o, size - o, " %u/%u", ch->expunged_seqs[i],
                              ch->expunged_uids[i]);
    for (size_t i = 0; i < ch->n_flag_changed && o < size; i++)
        o += (size_t)snprintf(out + o, size - o, " chg %zu", ch->flag_changed[i]);
}

/* IDLE batches (store_mailbox_sync_shared): views in the same state take the first one's
 * round; a view in another state, or another mode, syncs by itself; \Recent goes to the
 * first read-write view only. */
static void test_view_shared_sync(void **state)
{
    char home[512];
    struct store_user *u = open_user("sam", home, sizeof home);
    deliver_n(home, 6);
    struct store_mailbox *a = NULL, *b = NULL, *c = NULL, *e = NULL, *w = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &w, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &a, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &b, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", true, &e, &error), 0);
    /* c opens after a first change, so it is in another state than a and b */
    assert_int_equal(store_message_set_flags(w, 2, 1, STORE_FLAG_ANSWERED, NULL, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &c, &error), 0);

    const char *kw[] = {"$Label2", NULL};
    assert_int_equal(store_message_set_flags(w, 1, 1, STORE_FLAG_FLAGGED, kw, &error), 0);
    uint32_t gone[] = {1, 4};
    assert_int_equal(store_mailbox_expunge_uids_unsynced(w, gone, 2, &error), 0);
    append_n(u, 2);

    struct store_sync_share *share = store_sync_share_new();
    assert_non_null(share);
    struct store_sync_changes cha, chb, chc, che;
    assert_int_equal(store_mailbox_sync_shared(a, share, &cha, &error), 0);
    append_n(u, 1); /* after a's round: b, taking a copy of it, does not see this one */
    assert_int_equal(store_mailbox_sync_shared(b, share, &chb, &error), 0);
    assert_int_equal(store_mailbox_sync_shared(c, share, &chc, &error), 0);
    assert_int_equal(store_mailbox_sync_shared(e, share, &che, &error), 0);
    store_sync_share_free(share);

    char ta[512], tb[512], tc[512], te[512];
    changes_text(&cha, ta, sizeof ta);
    changes_text(&chb, tb, sizeof tb);
    changes_text(&chc, tc, sizeof tc);
    changes_text(&che, te, sizeof te);
    assert_string_equal(ta, "new 2 exp 1/1 3/4 chg 0 chg 1");
    assert_string_equal(tb, ta);
    /* c synced by itself (another state): it saw the third append and not UID 3's
     * \Answered again; e (read-only: another mode) too */
    assert_string_equal(tc, "new 3 exp 1/1 3/4 chg 0");
    assert_string_equal(te, "new 3 exp 1/1 3/4 chg 0 chg 1");
    store_sync_changes_free(&cha);
    store_sync_changes_free(&chb);
    store_sync_changes_free(&chc);
    store_sync_changes_free(&che);

    assert_int_equal(store_mailbox_count(a), 6);
    assert_int_equal(store_mailbox_count(b), 6);
    assert_int_equal(store_mailbox_uidnext(b), store_mailbox_uidnext(a));
    assert_int_equal(store_mailbox_highestmodseq(b), store_mailbox_highestmodseq(a));
    for (size_t i = 0; i < 6; i++) {
        const struct store_message *ma = store_mailbox_message(a, i);
        const struct store_message *mb = store_mailbox_message(b, i);
        assert_int_equal(ma->uid, mb->uid);
        assert_string_equal(ma->filename, mb->filename);
        assert_int_equal(n_keywords(ma->keywords), n_keywords(mb->keywords));
        assert_int_equal(ma->flags & ~(unsigned)STORE_FLAG_RECENT,
                         mb->flags & ~(unsigned)STORE_FLAG_RECENT);
        /* RFC 3501 §2.3.2: the new messages are \Recent in one session only */
        assert_false(mb->flags & STORE_FLAG_RECENT);
        assert_int_equal(!!(ma->flags & STORE_FLAG_RECENT), ma->uid >= 7);
    }
    assert_string_equal(store_mailbox_message(b, 0)->keywords[0], "$Label2");

    /* the next plain sync brings b up to date from where the copy left it */
    assert_int_equal(store_mailbox_sync(b, &chb, &error), 0);
    assert_int_equal(chb.n_new, 1);
    assert_int_equal(chb.n_expunged + chb.n_flag_changed, 0);
    store_sync_changes_free(&chb);
    assert_int_equal(store_mailbox_sync(a, &cha, &error), 0);
    store_sync_changes_free(&cha);
    assert_view_matches_index(u, a);
    assert_view_matches_index(u, b);
    assert_view_matches_index(u, c);
    assert_view_matches_index(u, e);
    store_mailbox_close(a);
    store_mailbox_close(b);
    store_mailbox_close(c);
    store_mailbox_close(e);
    store_mailbox_close(w);
    store_user_close(u);
}

static void test_view_reopen(void **state)
{
    char home[512];
    struct store_user *u = open_user("rita", home, sizeof home);
    deliver_n(home, 3);
    struct store_mailbox *box = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    assert_true(store_mailbox_message(box, 2)->flags & STORE_FLAG_RECENT);

    /* not the same mailbox or mode: the caller must close and open */
    assert_int_equal(store_mailbox_reopen(box, "Trash", false, &error), 1);
    assert_int_equal(store_mailbox_reopen(box, "INBOX", true, &error), 1);
    assert_int_equal(store_mailbox_count(box), 3);

    /* as a fresh SELECT: \Recent only on what arrived since ("inbox" is INBOX) */
    deliver_n(home, 2);
    assert_int_equal(store_mailbox_reopen(box, "inbox", false, &error), 0);
    assert_int_equal(store_mailbox_count(box), 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal((store_mailbox_message(box, i)->flags & STORE_FLAG_RECENT) != 0, i >= 3);
    assert_view_matches_index(u, box);

    /* our own expunge is gone after the reopen; nothing new: nothing \Recent */
    uint32_t uid1 = 1;
    assert_int_equal(store_mailbox_expunge_uids_unsynced(box, &uid1, 1, &error), 0);
    assert_int_equal(store_mailbox_count(box), 5); /* until the next sync */
    assert_int_equal(store_mailbox_reopen(box, "INBOX", false, &error), 0);
    assert_int_equal(store_mailbox_count(box), 4);
    assert_int_equal(store_mailbox_message(box, 0)->uid, 2);
    for (size_t i = 0; i < 4; i++)
        assert_false(store_mailbox_message(box, i)->flags & STORE_FLAG_RECENT);
    assert_view_matches_index(u, box);
    store_mailbox_close(box);
    store_user_close(u);
}

static int fsync_count;

static int counting_fsync(int fd)
{
    fsync_count++;
    return fsync(fd);
}

static void test_expunge_unsynced(void **state)
{
    char home[512], cur[700];
    struct store_user *u = open_user("uma", home, sizeof home);
    deliver_n(home, 3);
    struct store_mailbox *box = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    snprintf(cur, sizeof cur, "%s/Maildir/cur", home);

    store_io_fsync_hook = counting_fsync;
    fsync_count = 0;
    uint32_t uid1 = 1, uid2 = 2;
    assert_int_equal(store_mailbox_expunge_uids_unsynced(box, &uid1, 1, &error), 0);
    assert_int_equal(fsync_count, 0); /* IMAP EXPUNGE: as Dovecot, no folder fsync */
    assert_int_equal(store_mailbox_expunge_uids(box, &uid2, 1, &error), 0);
    assert_true(fsync_count >= 1); /* POP3 QUIT, MOVE: durable before return */
    store_io_fsync_hook = NULL;

    /* both are gone from the folder and the index */
    DIR *d = opendir(cur);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    assert_int_equal(n, 1);
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 2);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(box), 1);
    assert_int_equal(store_mailbox_message(box, 0)->uid, 3);
    assert_view_matches_index(u, box);
    store_mailbox_close(box);
    store_user_close(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_view_delta_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_shared_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expunge_unsynced, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
