/*
 * session_script.c - the scratch world (directory, store, template copy) and the script
 * interpreter of session_script.h.
 */
#include "session_script.h"

#include "fake_core.h"
#include "test_tmpdir.h"

#include "auth/auth.h"
#include "auth/auth_internal.h" /* auth_penalty_set_clock */
#include "core/config.h"
#include "core/job.h"
#include "core/log.h"
#include "core/util.h"
#include "store/store-private.h" /* fault hooks, store_index_pool_flush */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCRIPT_PASSWORD       "pw"
#define SCRIPT_MAX_OPENS      16 /* connections a script may open */
#define SCRIPT_MAX_DELIVERIES 8  /* 'n' operations that take effect */
#define SCRIPT_MAX_ANSWERS    16 /* 'A' and 'M' operations that take effect */
#define SCRIPT_MAX_REPEATED   (512 * 1024) /* bytes 'X' may send in one script */
#define SCRIPT_MAX_REPEATS    4200 /* segments 'X' may send in one script (each may be a
                                    * command: 4200 keep a run within about a second) */
/* CPU time (all threads) after which a script sends nothing more: what one command costs
 * ranges from microseconds (CAPA) to milliseconds (SEARCH TEXT or FETCH BODY[] over the
 * mailbox under the sanitizers), so no count of bytes or commands bounds a run; this keeps
 * one well within libFuzzer's -timeout (tests/fuzz/run.sh: 10 s) on a slow machine. */
#define SCRIPT_MAX_CPU_NS (2 * 1000000000LL)
#define SCRIPT_BIG_LINES      1024 /* ~70 KB: over a POP3 stream chunk (64 KB); four FETCH
                                     * items of it exceed an IMAP FETCH batch (256 KB) */

/* The template folder as read once at start-up: what a restore compares against. */
struct tpl_node {
    char *name; /* entry name ("" for the root) */
    struct stat st;
    struct tpl_node *kids; /* a folder's entries */
    size_t n_kids;
};

static struct {
    bool is_init;
    char data_dir[300], mail_dir[320], template_dir[320];
    struct tpl_node template; /* template_dir as read at start-up */
    struct config *cfg;
    struct auth_service *auth;
    time_t clock;         /* the throttle's clock: jumps forward between scripts */
    int fd_baseline;      /* open descriptors between scripts */
    size_t works_at_reset; /* fake_jobs_worked() when the store was last restored */
    int fault_countdown;  /* store writes/fsyncs until one fails; -1 none */
} world = {.fault_countdown = -1};

static void script_die(const char *what, const char *why)
{
    fprintf(stderr, "session script: %s: %s\n", what, why ? why : strerror(errno));
    abort();
}

/* ---- store faults (the hooks run on the worker thread, one call at a time) ------------- */

static bool script_fault_fires(void)
{
    if (world.fault_countdown < 0)
        return false;
    return world.fault_countdown-- == 0;
}

/* fsync is skipped: the store's durability is not what the scripts exercise. */
static int script_fsync(int fd)
{
    if (script_fault_fires()) {
        errno = EIO;
        return -1;
    }
    return 0;
}

static ssize_t script_write(int fd, const void *data, size_t len)
{
    if (script_fault_fires()) {
        errno = ENOSPC;
        return -1;
    }
    return write(fd, data, len);
}

static uint64_t script_clock_ms(void)
{
    return (uint64_t)world.clock * 1000;
}

/* ---- folders ------------------------------------------------------------------------- */

static void copy_file(const char *from, const char *to, const struct stat *st)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st->st_mode & 0777);
    if (in < 0 || out < 0)
        script_die(from, NULL);
    char chunk[65536];
    ssize_t n;
    while ((n = read(in, chunk, sizeof chunk)) > 0)
        if (util_write_all(out, chunk, (size_t)n) < 0)
            script_die(to, NULL);
    /* Maildir sync trusts recorded times: a restored folder must look untouched */
    struct timespec times[2] = {st->st_atim, st->st_mtim};
    futimens(out, times);
    close(in);
    close(out);
}

/* cp -a of a folder of regular files and folders (bounded depth). */
static void copy_tree(const char *from, const char *to, int depth)
{
    DIR *d = opendir(from);
    struct stat st_dir;
    if (!d || fstat(dirfd(d), &st_dir) < 0)
        script_die(from, NULL);
    if (mkdir(to, st_dir.st_mode & 0777) < 0 && errno != EEXIST)
        script_die(to, NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", from, de->d_name);
        snprintf(dst, sizeof dst, "%s/%s", to, de->d_name);
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 12)
            copy_tree(src, dst, depth + 1);
        else if (S_ISREG(st.st_mode))
            copy_file(src, dst, &st);
    }
    closedir(d);
    struct timespec times[2] = {st_dir.st_atim, st_dir.st_mtim};
    utimensat(AT_FDCWD, to, times, 0);
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static void tpl_read(struct tpl_node *node, const char *path, int depth)
{
    DIR *d = opendir(path);
    if (!d || fstat(dirfd(d), &node->st) < 0)
        script_die(path, NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct tpl_node *kids = realloc(node->kids, (node->n_kids + 1) * sizeof *kids);
        if (!kids)
            script_die("template", "out of memory");
        node->kids = kids;
        struct tpl_node *k = &kids[node->n_kids++];
        *k = (struct tpl_node){.name = strdup(de->d_name)};
        char sub[4096];
        bool is_cut = (size_t)snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) >= sizeof sub;
        if (!k->name || is_cut || lstat(sub, &k->st) < 0)
            script_die(sub, NULL);
        if (S_ISDIR(k->st.st_mode) && depth < 12)
            tpl_read(k, sub, depth + 1);
    }
    closedir(d);
}

static bool tpl_has(const struct tpl_node *node, const char *name)
{
    for (size_t i = 0; i < node->n_kids; i++)
        if (strcmp(node->kids[i].name, name) == 0)
            return true;
    return false;
}

/* Maildir message files (in cur/, new/, tmp/) and the maildirfolder marker are never
 * rewritten in place; anything else (the index) may be. */
static bool tpl_may_change_in_place(const struct tpl_node *folder, const struct tpl_node *file)
{
    return strcmp(folder->name, "cur") != 0 && strcmp(folder->name, "new") != 0 &&
           strcmp(folder->name, "tmp") != 0 && strcmp(file->name, "maildirfolder") != 0;
}

/* Make the live folder the same as the template's again, touching only what differs: a
 * folder with the template's mtime has the template's entries (the store never sets a
 * folder's time), and a file that cannot change in place is the template's while its
 * folder is unchanged; other files are compared by size and mtime. Far cheaper than
 * rm -rf and a copy when a script changed little (most change only the index). */
static void restore_tree(const struct tpl_node *node, const char *tpl, const char *live, int depth)
{
    struct stat st_live;
    bool is_changed = true;
    if (lstat(live, &st_live) < 0 || !S_ISDIR(st_live.st_mode)) {
        rm_rf(live, 0);
        if (mkdir(live, node->st.st_mode & 0777) < 0)
            script_die(live, NULL);
    } else if (!same_time(&st_live.st_mtim, &node->st.st_mtim)) {
        DIR *d = opendir(live); /* entries the template does not have go */
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
                tpl_has(node, de->d_name))
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", live, de->d_name);
            rm_rf(path, 0);
        }
        if (d)
            closedir(d);
    } else {
        is_changed = false;
    }
    for (size_t i = 0; i < node->n_kids; i++) {
        const struct tpl_node *k = &node->kids[i];
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", tpl, k->name);
        snprintf(dst, sizeof dst, "%s/%s", live, k->name);
        struct stat st;
        if (S_ISDIR(k->st.st_mode)) {
            if (depth < 12)
                restore_tree(k, src, dst, depth + 1);
        } else if (S_ISREG(k->st.st_mode) && (is_changed || tpl_may_change_in_place(node, k)) &&
                   (lstat(dst, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != k->st.st_size ||
                    !same_time(&st.st_mtim, &k->st.st_mtim))) {
            rm_rf(dst, 0);
            copy_file(src, dst, &k->st);
            is_changed = true;
        }
    }
    if (is_changed) {
        struct timespec times[2] = {node->st.st_atim, node->st.st_mtim};
        utimensat(AT_FDCWD, live, times, 0);
    }
}

/* Date every folder below path an hour back, so the index can trust its mtimes. */
static void age_folders(const char *path, int depth)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 ||
            strcmp(de->d_name, "..") == 0 || depth >= 12)
            continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        age_folders(sub, depth + 1);
    }
    closedir(d);
    struct timespec old = {.tv_sec = time(NULL) - 3600};
    struct timespec times[2] = {old, old};
    utimensat(AT_FDCWD, path, times, 0);
}

/* Print what each open descriptor is (a leak report). */
static void list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char path[300], target[4096];
        snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n > 0)
            fprintf(stderr, "  fd %s -> %.*s\n", de->d_name, (int)n, target);
    }
    if (d)
        closedir(d);
}

/* Descriptors open on files of the scratch folder (messages, indexes, spill files):
 * the ones a session or job could leak. Others (the fuzzer's own pipes) do not count. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    size_t root_len = strlen(tmp_root);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char path[300], target[4096];
        snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
        ssize_t len = readlink(path, target, sizeof target);
        if (len >= (ssize_t)root_len && memcmp(target, tmp_root, root_len) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* The scratch folders of processes that died (a crash skips atexit) go first. */
static void sweep_stale(const char *base)
{
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int pid = 0;
        if (sscanf(de->d_name, "tern-fuzz-%d-", &pid) != 1 || pid <= 0 || pid == getpid())
            continue;
        if (kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", base, de->d_name);
        rm_rf(path, 0);
    }
    closedir(d);
}

static void script_world_cleanup(void)
{
    if (tmp_root[0])
        rm_rf(tmp_root, 0);
}

/* ---- the users' mail ---------------------------------------------------------------------- */

static const char msg_plain[] =
    "From: Bob <bob@example.test>\r\n"
    "To: alice@example.test\r\n"
    "Subject: Hello\r\n"
    "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    "Message-ID: <1@example.test>\r\n"
    "\r\n"
    "Hi Alice,\r\n"
    "how are you?\r\n"
    ".\r\n"
    "..a dotted line\r\n";

static const char msg_multipart[] =
    "From: =?UTF-8?B?QsO2Yg==?= <bob@example.test>\r\n"
    "To: Alice <alice@example.test>, \"Team\" <team@example.test>\r\n"
    "Cc: carol@remote.example\r\n"
    "Reply-To: bob+reply@example.test\r\n"
    "Subject: =?UTF-8?Q?Quarterly_r=C3=A9port?=\r\n"
    "Date: Tue, 3 Mar 2026 10:00:00 +0100\r\n"
    "Message-ID: <2@example.test>\r\n"
    "In-Reply-To: <1@example.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    "\r\n"
    "This is a multi-part message in MIME format.\r\n"
    "--outer\r\n"
    "Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
    "\r\n"
    "--inner\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Numbers are up =E2=80=94 see the attachment.\r\n"
    "--inner\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    "<p>Numbers are up &mdash; see the attachment.</p>\r\n"
    "--inner--\r\n"
    "--outer\r\n"
    "Content-Type: application/pdf; name=\"report.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n"
    "--outer--\r\n";

static const char msg_forward[] =
    "From: carol@remote.example\r\n"
    "To: alice@example.test\r\n"
    "Subject: Fwd: lunch\r\n"
    "Date: Wed, 4 Mar 2026 12:00:00 +0000\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"fwd\"\r\n"
    "\r\n"
    "--fwd\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "See below.\r\n"
    "--fwd\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "From: dave@remote.example\r\n"
    "To: carol@remote.example\r\n"
    "Subject: lunch\r\n"
    "Date: Wed, 4 Mar 2026 11:00:00 +0000\r\n"
    "\r\n"
    "Lunch at noon?\r\n"
    "--fwd--\r\n";

static const char msg_work[] = "From: boss@example.test\r\nSubject: work item\r\n\r\nDo it.\r\n";
static const char msg_bob[] = "From: alice@example.test\r\nSubject: for bob\r\n\r\nHi Bob.\r\n";
static const char msg_new[] =
    "From: carol@remote.example\r\nTo: alice@example.test\r\nSubject: new mail\r\n\r\n"
    "Something new.\r\n";

static void home_of(const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/example.test/%s", world.mail_dir, name);
}

static void deliver(const char *name, const char *data, size_t len)
{
    char home[400], user[64];
    home_of(name, home, sizeof home);
    snprintf(user, sizeof user, "%s@example.test", name);
    struct store_source src = {.data = data, .len = len, .fd = -1};
    struct store_target t = {.user = user, .home = home};
    char *err = NULL;
    if (store_deliver(&src, &t, 1, &err) < 0)
        script_die("deliver", err);
}

static struct store_user *open_user(const char *name)
{
    char home[400], user[64];
    home_of(name, home, sizeof home);
    snprintf(user, sizeof user, "%s@example.test", name);
    struct store_user *u = NULL;
    char *err = NULL;
    if (store_user_open(home, user, &u, &err) < 0)
        script_die("open user", err);
    return u;
}

/* Open every mailbox of a user read-only once: the index records the aged folders. */
static void sync_all(struct store_user *u)
{
    struct store_mailbox_info *list = NULL;
    size_t n = 0;
    char *err = NULL;
    if (store_mailbox_list(u, &list, &n, &err) < 0)
        script_die("list", err);
    for (size_t i = 0; i < n; i++) {
        struct store_mailbox *box = NULL;
        if (!list[i].noselect && store_mailbox_open(u, list[i].name, true, &box, &err) < 0)
            script_die("sync", err);
        if (box)
            store_mailbox_close(box);
    }
    store_mailbox_info_free(list, n);
}

static void make_mail(void)
{
    char *err = NULL;
    const char *users[][2] = {{"alice@example.test", "0"}, {"bob@example.test", "3000"},
                              {"off@example.test", "0"}};
    if (auth_domain_add(world.auth, "example.test", &err) < 0)
        script_die("domain", err);
    for (size_t i = 0; i < 3; i++)
        if (auth_user_add(world.auth, users[i][0], SCRIPT_PASSWORD, strtoull(users[i][1], NULL, 10),
                          &err) < 0)
            script_die("user", err);
    if (auth_user_set_enabled(world.auth, "off@example.test", false, &err) < 0)
        script_die("disable", err);

    struct store_user *alice = open_user("alice");
    deliver("alice", msg_plain, sizeof msg_plain - 1);
    deliver("alice", msg_multipart, sizeof msg_multipart - 1);
    struct buf big;
    buf_init(&big, 0);
    buf_append_str(&big, "From: Bob <bob@example.test>\r\nSubject: big\r\n\r\n");
    for (int i = 0; i < SCRIPT_BIG_LINES; i++)
        buf_printf(&big, "line %05d: the quick brown fox jumps over the lazy dog 0123456789\r\n", i);
    deliver("alice", big.data, big.len);
    buf_free(&big);
    if (store_mailbox_create(alice, "Work", &err) < 0)
        script_die("create", err);
    struct store_source src = {.data = msg_work, .len = sizeof msg_work - 1, .fd = -1};
    uint32_t uidvalidity, uid;
    if (store_mailbox_append(alice, "Work", &src, 0, NULL, 0, &uidvalidity, &uid, &err) < 0)
        script_die("append", err);
    struct store_mailbox *box = NULL;
    if (store_mailbox_open(alice, "INBOX", false, &box, &err) < 0)
        script_die("select", err);
    const char *const label[] = {"$Label1", NULL};
    if (store_message_set_flags(box, 0, 0, STORE_FLAG_SEEN, NULL, &err) < 0 ||
        store_message_set_flags(box, 1, 0, STORE_FLAG_FLAGGED | STORE_FLAG_ANSWERED, label,
                                &err) < 0 ||
        store_message_set_flags(box, 2, 0, STORE_FLAG_SEEN, NULL, &err) < 0)
        script_die("flags", err);
    store_mailbox_close(box);
    deliver("alice", msg_forward, sizeof msg_forward - 1); /* still \Recent */
    struct store_user *bob = open_user("bob");
    deliver("bob", msg_bob, sizeof msg_bob - 1);

    age_folders(world.mail_dir, 0);
    sync_all(alice);
    sync_all(bob);
    store_user_close(alice);
    store_user_close(bob);
}

void script_world_init(void)
{
    if (world.is_init)
        return;
    world.is_init = true;
    const char *log_path = getenv("TERN_FUZZ_LOG");
    log_open(LOG_TARGET_FILE, log_path && *log_path ? log_path : "/dev/null");
    fake_core_init();

    const char *base = getenv("TERN_FUZZ_TMP");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    sweep_stale(base);
    snprintf(tmp_root, sizeof tmp_root, "%s/tern-fuzz-%d-XXXXXX", base, (int)getpid());
    if (!mkdtemp(tmp_root))
        script_die(tmp_root, NULL);
    atexit(script_world_cleanup);
    snprintf(world.data_dir, sizeof world.data_dir, "%s/data", tmp_root);
    snprintf(world.mail_dir, sizeof world.mail_dir, "%s/mail", world.data_dir);
    snprintf(world.template_dir, sizeof world.template_dir, "%s/template", tmp_root);
    if (mkdir(world.data_dir, 0700) < 0)
        script_die(world.data_dir, NULL);

    char text[1024];
    int len = snprintf(text, sizeof text,
                       "data_dir = %s\n"
                       "hostname = mail.example.test\n"
                       "auth.password_schemes = PLAIN SCRAM-SHA-256 CRAM-MD5\n"
                       "auth.max_failures = 3\n"
                       "smtp.max_message_size = 1048576\n",
                       world.data_dir);
    char *err = NULL;
    world.cfg = config_parse_buffer("session_script", text, (size_t)len, NULL, 0, false, &err);
    if (!world.cfg)
        script_die("config", err);
    world.auth = auth_service_open(world.cfg, &err);
    if (!world.auth)
        script_die("directory", err);
    world.clock = time(NULL);
    auth_penalty_set_clock(world.auth, script_clock_ms);
    store_io_fsync_hook = script_fsync;
    store_io_write_hook = script_write;
    struct server_context *ctx = fake_core_context();
    ctx->cfg = world.cfg;
    ctx->auth = world.auth;
    if (store_notify_init(fake_core_base()) < 0)
        script_die("notify", NULL);

    make_mail();
    store_index_pool_flush();
    copy_tree(world.mail_dir, world.template_dir, 0);
    tpl_read(&world.template, world.template_dir, 0);
    world.works_at_reset = fake_jobs_worked();
    world.fd_baseline = count_fds(); /* the directory's tern.db */
}

/* Put the users' folders back as the template has them. */
static void script_world_restore(void)
{
    restore_tree(&world.template, world.template_dir, world.mail_dir, 0);
}

/* ---- the script ------------------------------------------------------------------------ */

struct script {
    const struct script_protocol *sp;
    int peer;       /* the connection client bytes go to */
    unsigned split; /* header byte 1 (z) */
    unsigned n_opens, n_deliveries, n_answers;
    const uint8_t *last;  /* the last segment of client bytes sent (for 'X') */
    size_t last_len;
    size_t n_repeated;    /* bytes sent by 'X' so far */
    unsigned n_repeats;   /* segments sent by 'X' so far */
    bool is_dirty; /* the store may have changed */
};

static long long script_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long script_cpu_start; /* process CPU time when the running script began */

/* The script has used its CPU time (SCRIPT_MAX_CPU_NS): the loop stops settling (the
 * fake core asks), no more client bytes are sent and the connections are reset. */
static bool script_is_spent(void)
{
    return script_cpu_ns() - script_cpu_start > SCRIPT_MAX_CPU_NS;
}

/* Client bytes, split into reads as the split mode says. */
static void script_send(struct script *st, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        size_t n = len;
        if (st->split >= 128) {
            const uint8_t *lf = memchr(p, '\n', len);
            if (lf)
                n = (size_t)(lf - p) + 1;
        } else if (st->split > 0 && st->split < len) {
            n = st->split;
        }
        fake_feed(st->peer, p, n);
        fake_settle();
        p += n;
        len -= n;
    }
}

static void script_open(struct script *st, int peer, uint8_t how)
{
    if (fake_is_open(peer) || st->n_opens >= SCRIPT_MAX_OPENS)
        return;
    st->n_opens++;
    bool is_tls = how & 8;
    fake_open(peer, st->sp->proto, is_tls ? st->sp->tls_role : st->sp->plain_role, is_tls,
              !(how & 4));
}

static void hex_of(const unsigned char *md, unsigned len, char *out)
{
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* RFC 1939 §7: APOP alice MD5(timestamp password), the timestamp from the greeting. */
static void script_apop(struct script *st)
{
    const char *greeting = fake_greeting(st->peer);
    const char *lt = strchr(greeting, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    if (!gt)
        return;
    char text[600];
    int n = snprintf(text, sizeof text, "%.*s%s", (int)(gt + 1 - lt), lt, SCRIPT_PASSWORD);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (n < 0 || !EVP_Digest(text, (size_t)n, md, &md_len, EVP_md5(), NULL))
        return;
    char hex[2 * EVP_MAX_MD_SIZE + 1], line[128];
    hex_of(md, md_len, hex);
    n = snprintf(line, sizeof line, "APOP alice@example.test %s\r\n", hex);
    script_send(st, line, (size_t)n);
}

/* RFC 2195: answer the last "+ <challenge>" with "alice HMAC-MD5(pw, challenge)". */
static void script_cram_md5(struct script *st)
{
    const char *out = fake_output(st->peer), *challenge = NULL;
    size_t len = strlen(out);
    const char *from = len > 4096 ? out + len - 4096 : out; /* bounded per operation */
    for (const char *p = from; (p = strstr(p, "+ ")) != NULL; p += 2)
        if (p == out || p[-1] == '\n')
            challenge = p + 2;
    const char *end = challenge ? strpbrk(challenge, "\r\n") : NULL;
    if (!end)
        return;
    struct buf raw;
    buf_init(&raw, 4096);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    bool is_ok = util_base64_decode_lenient(challenge, (size_t)(end - challenge), &raw) &&
                 HMAC(EVP_md5(), SCRIPT_PASSWORD, (int)strlen(SCRIPT_PASSWORD),
                      (const unsigned char *)buf_cstr(&raw), raw.len, mac, &mac_len) != NULL;
    buf_free(&raw);
    if (!is_ok)
        return;
    char hex[2 * EVP_MAX_MD_SIZE + 1], answer[128];
    hex_of(mac, mac_len, hex);
    int n = snprintf(answer, sizeof answer, "alice@example.test %s", hex);
    char *b64 = util_base64_encode_str(answer, (size_t)n);
    if (!b64)
        return;
    script_send(st, b64, strlen(b64));
    script_send(st, "\r\n", 2);
    free(b64);
}

/* A message file of alice's INBOX: its base name (for delivery order) and folder. */
struct inbox_file {
    char name[256];
    const char *sub; /* "cur" or "new" */
};

/* Delivery order of two Maildir names "<sec>.M<usec>P<pid>Q<n>.<host>": numerically, since
 * the microseconds are not zero-padded ("M99999" sorts after "M100005" as text, which
 * made the victim of 'r' depend on the clock at the world's creation). */
static int inbox_file_compare(const void *a, const void *b)
{
    const char *x = ((const struct inbox_file *)a)->name;
    const char *y = ((const struct inbox_file *)b)->name;
    char *ex, *ey;
    unsigned long long sx = strtoull(x, &ex, 10), sy = strtoull(y, &ey, 10);
    if (sx != sy)
        return sx < sy ? -1 : 1;
    unsigned long long ux = strncmp(ex, ".M", 2) == 0 ? strtoull(ex + 2, NULL, 10) : 0;
    unsigned long long uy = strncmp(ey, ".M", 2) == 0 ? strtoull(ey + 2, NULL, 10) : 0;
    if (ux != uy)
        return ux < uy ? -1 : 1;
    return strcmp(x, y);
}

/* Another program (a MUA on the Maildir, a cleanup script) removes a message file of
 * alice's INBOX behind the store's back: the (k%8)-th by name (delivery order, whichever
 * folder it is in), so a script always removes the same message. The store must notice,
 * never crash. */
static void script_remove_behind(uint8_t k)
{
    static const char *const subs[] = {"cur", "new"};
    struct inbox_file files[64];
    size_t n = 0;
    for (size_t i = 0; i < 2; i++) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/example.test/alice/Maildir/%s", world.mail_dir, subs[i]);
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL && n < sizeof files / sizeof files[0]) {
            if (de->d_name[0] == '.')
                continue;
            snprintf(files[n].name, sizeof files[n].name, "%s", de->d_name);
            files[n++].sub = subs[i];
        }
        if (d)
            closedir(d);
    }
    if (n == 0)
        return;
    qsort(files, n, sizeof files[0], inbox_file_compare);
    const struct inbox_file *victim = &files[k % 8 % n];
    char path[4096];
    snprintf(path, sizeof path, "%s/example.test/alice/Maildir/%s/%s", world.mail_dir,
             victim->sub, victim->name);
    (void)unlink(path);
}

struct script_delivery {
    char home[400], user[64];
};

/* Worker thread: another process (the SMTP side) delivers to the user. */
static void script_deliver_work(void *arg)
{
    struct script_delivery *d = arg;
    struct store_source src = {.data = msg_new, .len = sizeof msg_new - 1, .fd = -1};
    struct store_target t = {.user = d->user, .home = d->home};
    char *err = NULL;
    (void)store_deliver(&src, &t, 1, &err); /* an injected fault may fail it */
    free(err);
}

static void script_op(struct script *st, uint8_t op, uint8_t arg)
{
    struct fake_policy *policy = fake_core_policy();
    switch (op) {
    case 'w': fake_job_work(arg); break;
    case 'd': fake_job_done(); break;
    case 'j': fake_jobs_run_all(); break;
    case 'J': policy->auto_jobs = !policy->auto_jobs; break;
    case 'o': fake_drain(st->peer, SIZE_MAX); break;
    case 'p': fake_drain(st->peer, ((size_t)arg + 1) * 4096); break;
    case 'O': policy->auto_drain = !policy->auto_drain; break;
    case 'e': fake_eof(st->peer); break;
    case 'x': fake_drop(st->peer, "connection reset"); break;
    case 't': fake_timeout(st->peer, false); break;
    case 'W': fake_timeout(st->peer, true); break;
    case 'h': fake_handshake(st->peer, true); break;
    case 'H': fake_handshake(st->peer, false); break;
    case 's': fake_shutdown(); break;
    case 'l': fake_loop_once(false); break;
    case 'T': fake_loop_once(true); break;
    case 'c':
        st->peer = arg & 3;
        script_open(st, st->peer, arg);
        break;
    case 'n':
        if (st->n_deliveries++ < SCRIPT_MAX_DELIVERIES) {
            struct script_delivery d;
            const char *name = arg & 1 ? "bob" : "alice";
            home_of(name, d.home, sizeof d.home);
            snprintf(d.user, sizeof d.user, "%s@example.test", name);
            fake_run_on_worker(script_deliver_work, &d);
            st->is_dirty = true;
        }
        break;
    case 'r':
        script_remove_behind(arg);
        st->is_dirty = true;
        break;
    case 'F': world.fault_countdown = arg % 16; break;
    case 'z': st->split = arg; break;
    case 'X': /* volume from a short script: long lines, big literals, many commands */
        for (unsigned i = 0; i < ((unsigned)arg + 1) * 4 && st->last_len > 0 &&
                             st->n_repeated + st->last_len <= SCRIPT_MAX_REPEATED &&
                             st->n_repeats < SCRIPT_MAX_REPEATS && !script_is_spent();
             i++) {
            st->n_repeated += st->last_len;
            st->n_repeats++;
            script_send(st, st->last, st->last_len);
        }
        break;
    case 'A':
        if (st->n_answers++ < SCRIPT_MAX_ANSWERS)
            script_apop(st);
        break;
    case 'M':
        if (st->n_answers++ < SCRIPT_MAX_ANSWERS)
            script_cram_md5(st);
        break;
    default: break;
    }
}

/* The end: every connection gets the end action, the loop runs until quiet, the rest is
 * dropped and the remaining jobs run; then nothing may be left behind. */
static void script_end(struct script *st, unsigned how)
{
    if (how == 3)
        fake_shutdown();
    for (int p = 0; p < FAKE_MAX_PEERS; p++) {
        if (how == 0)
            fake_eof(p);
        else if (how == 1)
            fake_drop(p, "connection reset");
        else if (how == 2)
            fake_timeout(p, false);
    }
    struct fake_policy *policy = fake_core_policy();
    policy->auto_jobs = policy->auto_drain = policy->auto_handshake = true;
    policy->is_spent = NULL;
    fake_settle();
    for (int p = 0; p < FAKE_MAX_PEERS; p++)
        fake_drop(p, "lost connection");
    fake_jobs_run_all();
    fake_loop_once(false); /* notifications of the last jobs reach nobody */
    world.fault_countdown = -1;
    if (job_in_flight() != 0 || job_session_count() != 0) {
        fprintf(stderr, "session script: %zu jobs and %zu sessions outlive their connections\n",
                job_in_flight(), job_session_count());
        abort();
    }
    store_index_pool_flush();
    if (st->is_dirty || fake_jobs_worked() != world.works_at_reset) {
        script_world_restore();
        world.works_at_reset = fake_jobs_worked();
    }
    int fds = count_fds();
    if (fds > world.fd_baseline) {
        fprintf(stderr, "session script: %d descriptors leaked; open now:\n", fds - world.fd_baseline);
        list_fds();
        abort();
    }
}

void script_run(const struct script_protocol *sp, const uint8_t *data, size_t size)
{
    script_world_init();
    fake_core_reset();
    if (size > SCRIPT_MAX_INPUT)
        size = SCRIPT_MAX_INPUT;
    uint8_t flags = size > 0 ? data[0] : 0;
    struct script st = {.sp = sp, .split = size > 1 ? data[1] : 0};
    script_cpu_start = script_cpu_ns();
    world.clock += 100000; /* past any failure window: each script starts unthrottled */
    *fake_core_policy() = (struct fake_policy){
        .auto_jobs = !(flags & 0x04),
        .auto_drain = !(flags & 0x08),
        .auto_handshake = !(flags & 0x40),
        .output_cap = 2 * 1024 * 1024,
        .is_spent = script_is_spent,
    };
    script_open(&st, 0, (flags & 0x01 ? 0 : 4) | (flags & 0x02 ? 8 : 0));
    fake_settle();
    uint8_t *segment = malloc(size ? size : 1);
    if (!segment)
        script_die("script", "out of memory");
    size_t n = 0;
    for (size_t i = 2; i < size; i++) {
        if (data[i] != 0xFF) {
            segment[n++] = data[i];
            continue;
        }
        if (i + 1 < size && data[i + 1] == 0xFF) {
            segment[n++] = 0xFF;
            i++;
            continue;
        }
        if (script_is_spent()) {
            n = 0;
            break;
        }
        script_send(&st, segment, n);
        if (n > 0) {
            st.last = segment; /* stays until the next segment starts */
            st.last_len = n;
        }
        n = 0;
        uint8_t op = i + 1 < size ? data[++i] : 0;
        uint8_t arg = 0;
        if (op && strchr("wpcnrFzX", op) && i + 1 < size)
            arg = data[++i];
        script_op(&st, op, arg);
        fake_settle();
    }
    script_send(&st, segment, n);
    free(segment);
    /* out of time, commands may wait in the input: a reset drops them unread */
    script_end(&st, script_is_spent() ? 1 : (flags >> 4) & 3);
}
