/*
 * sendmail.c - `tern sendmail [-t] [-i|-oi] [-f from] [-F name] [rcpt...]` and `mailq`,
 * the local submission interface every Unix program expects (also reached by invoking the
 * binary as "sendmail" or "mailq", e.g. through a symlink).
 *
 * The message is read from stdin (LF or CRLF line ends; without -i a line with a single
 * "." ends it), completed with Date, Message-ID and From when missing (RFC 5322 §3.6
 * requires Date and From), and written durably into the queue (active/) before we exit 0.
 * The queue runner of the running server then delivers it: local recipients into their
 * mailboxes, remote ones over SMTP. -t takes the recipients from To/Cc/Bcc and removes Bcc.
 *
 * Run as root, we first drop to run_user so the queue file belongs to the server.
 *
 * sendmail.milters (Postfix's non_smtpd_milters) see the message before it is queued, as
 * a local submission without a client address: a reject exits 69 (EX_UNAVAILABLE) with
 * the milter's reply, a tempfail 75 (EX_TEMPFAIL), a discard 0 with nothing queued, a
 * quarantine queues the message on hold; header, body, sender and recipient changes are
 * applied to what is queued.
 */
#include "cli/cli.h"

#include "core/buf.h"
#include "core/config.h"
#include "core/util.h"
#include "mailauth/mailauth.h"
#include "milter/milter.h"
#include "queue/queue.h"
#include "store/store.h"

#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SENDMAIL_MAX_RCPTS 1000

struct rcpt_list {
    char **items;
    size_t n;
};

static int rcpt_list_add(struct rcpt_list *l, const char *s, size_t len, const char *domain)
{
    while (len > 0 && isspace((unsigned char)*s))
        s++, len--;
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0)
        return 0;
    if (l->n >= SENDMAIL_MAX_RCPTS || len > 320)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == '<' || s[i] == '>')
            return -1;
    bool has_at = memchr(s, '@', len) != NULL;
    struct buf b;
    buf_init(&b, 1024);
    buf_append(&b, s, len);
    if (!has_at) /* a bare login: our domain, like Postfix's myorigin */
        buf_printf(&b, "@%s", domain);
    char **n = realloc(l->items, (l->n + 1) * sizeof *n);
    if (!n) {
        buf_free(&b);
        return -1;
    }
    l->items = n;
    l->items[l->n++] = buf_steal(&b);
    return 0;
}

/* Addresses of one header value (RFC 5322 §3.4 address-list, leniently): comments,
 * quoted display names and group names are skipped; "<addr>" wins over the bare text. */
static int rcpt_list_add_header(struct rcpt_list *l, const char *v, size_t len, const char *domain)
{
    size_t i = 0;
    while (i < len) {
        /* one address: up to a ',' or ';' outside quotes, comments and brackets */
        struct buf bare;
        buf_init(&bare, 4096);
        const char *angle = NULL;
        size_t angle_len = 0;
        int depth = 0;
        bool in_quote = false;
        for (; i < len; i++) {
            char c = v[i];
            if (in_quote) {
                if (c == '\\' && i + 1 < len)
                    i++;
                else if (c == '"')
                    in_quote = false;
                continue;
            }
            if (depth > 0) {
                depth += c == '(' ? 1 : c == ')' ? -1 : 0;
                continue;
            }
            if (c == '"') {
                in_quote = true;
            } else if (c == '(') {
                depth = 1;
            } else if (c == '<') {
                const char *end = memchr(v + i, '>', len - i);
                if (!end)
                    break;
                angle = v + i + 1;
                angle_len = (size_t)(end - angle);
                i = (size_t)(end - v);
            } else if (c == ':') {
                buf_reset(&bare); /* "group:" */
            } else if (c == ',' || c == ';') {
                i++;
                break;
            } else {
                buf_append_byte(&bare, c);
            }
        }
        int r = 0;
        if (angle)
            r = rcpt_list_add(l, angle, angle_len, domain);
        else if (bare.len)
            r = rcpt_list_add(l, bare.data, bare.len, domain);
        buf_free(&bare);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Is line (a header start) the field name? */
static bool header_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* Drop privileges to run_user when root, so queue files belong to the server. */
static int sendmail_drop_root(const struct config *cfg)
{
    if (geteuid() != 0)
        return 0;
    struct passwd *pw = getpwnam(cfg->run_user);
    if (!pw)
        return 0; /* no such user: the server runs as root too */
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        perror("tern: sendmail: cannot drop privileges");
        return -1;
    }
    return 0;
}

static int sendmail_usage(void)
{
    fprintf(stderr, "usage: sendmail [-t] [-i|-oi] [-f from] [-F name] [-bp] [recipient...]\n");
    return 64; /* EX_USAGE, as sendmail(8) */
}

int cli_mailq(const struct cli_options *o, int argc, char **argv)
{
    char verb0[] = "queue", verb1[] = "list";
    char *qargv[] = {verb0, verb1, NULL};
    return cli_queue(o, 2, qargv);
}

/* Run sendmail.milters over the message in *src. 0 queue it (*src may now point into
 * rewritten; *is_held_r: to the hold queue), 1 discarded, else the exit code. */
static int sendmail_filter(const struct config *cfg, const char *id, struct buf *sender,
                           struct rcpt_list *rcpts, const char *domain, struct store_source *src,
                           struct buf *rewritten, bool *is_held_r)
{
    *is_held_r = false;
    struct milter_spec *specs;
    bool is_oom;
    size_t n = milter_specs_from_config(cfg, &cfg->sendmail_milters, &specs, &is_oom);
    if (n == 0)
        return is_oom ? 75 : 0;
    struct milter_message m = {
        .client_name = "localhost",
        .hostname = cfg->hostname,
        .daemon_name = cfg->hostname,
        .queue_id = id,
        .sender = sender->data ? sender->data : "",
        .rcpts = (const char *const *)rcpts->items,
        .n_rcpts = rcpts->n,
        .helo = "",
        .data = src->data,
        .len = src->len,
    };
    struct milter_outcome o;
    milter_run(specs, n, &m, &o);
    free(specs);
    int rc = 0;
    if (o.verdict == MILTER_REJECT || o.verdict == MILTER_TEMPFAIL) {
        fprintf(stderr, "sendmail: fatal: message refused: %s\n", o.reply);
        rc = o.verdict == MILTER_REJECT ? 69 : 75;
    } else if (o.verdict == MILTER_DISCARD) {
        fprintf(stderr, "sendmail: message discarded by a milter\n");
        rc = 1;
    }
    bool has_content_change = o.has_new_body;
    for (size_t i = 0; rc == 0 && i < o.n_changes; i++) {
        const struct milter_change *c = &o.changes[i];
        const char *a = c->name;
        size_t len = strlen(a);
        if (len >= 2 && a[0] == '<' && a[len - 1] == '>')
            a++, len -= 2;
        if (c->kind == MILTER_ADD_RCPT) {
            if (rcpt_list_add(rcpts, a, len, domain) < 0)
                fprintf(stderr, "sendmail: milter: cannot add recipient %s\n", c->name);
        } else if (c->kind == MILTER_DEL_RCPT) {
            for (size_t k = rcpts->n; k-- > 0;)
                if (strlen(rcpts->items[k]) == len && strncasecmp(rcpts->items[k], a, len) == 0) {
                    free(rcpts->items[k]);
                    memmove(&rcpts->items[k], &rcpts->items[k + 1],
                            (rcpts->n - k - 1) * sizeof *rcpts->items);
                    rcpts->n--;
                }
        } else if (c->kind == MILTER_CHANGE_FROM) {
            buf_reset(sender);
            buf_append(sender, a, len);
        } else {
            has_content_change = true;
        }
    }
    if (rc == 0 && has_content_change) {
        if (milter_message_rewrite(src->data, src->len, &o, UINT64_MAX, rewritten) < 0) {
            fprintf(stderr, "sendmail: fatal: out of memory\n");
            rc = 75;
        } else {
            *src = (struct store_source){
                .data = rewritten->data, .len = rewritten->len, .fd = -1, .size = rewritten->len};
        }
    }
    if (rc == 0 && rcpts->n == 0) {
        fprintf(stderr, "sendmail: a milter removed every recipient\n");
        rc = 1;
    }
    *is_held_r = rc == 0 && o.quarantine != NULL;
    milter_outcome_free(&o);
    return rc;
}

int cli_sendmail(const struct cli_options *o, int argc, char **argv)
{
    struct cli_options opts = *o;
    bool is_extract = false, is_dot_ends = true;
    const char *from = NULL, *full_name = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "-t") == 0) {
            is_extract = true;
        } else if (strcmp(a, "-i") == 0 || strcmp(a, "-oi") == 0) {
            is_dot_ends = false;
        } else if (strcmp(a, "-bp") == 0) {
            return cli_mailq(&opts, argc, argv);
        } else if (strncmp(a, "-f", 2) == 0 || strncmp(a, "-F", 2) == 0 ||
                   strncmp(a, "-C", 2) == 0 || strncmp(a, "-r", 2) == 0) {
            const char *v = a[2] ? a + 2 : i + 1 < argc ? argv[++i] : NULL;
            if (!v)
                return sendmail_usage();
            if (a[1] == 'F')
                full_name = v;
            else if (a[1] == 'C')
                opts.config_path = v;
            else
                from = v;
        } else if (strcmp(a, "-bm") == 0 || strcmp(a, "-v") == 0 || strncmp(a, "-o", 2) == 0 ||
                   strncmp(a, "-B", 2) == 0 || strncmp(a, "-N", 2) == 0 || strcmp(a, "-U") == 0) {
            /* accepted for compatibility, no effect (as Postfix does for most) */
            if ((strcmp(a, "-B") == 0 || strcmp(a, "-N") == 0) && i + 1 < argc)
                i++;
        } else {
            fprintf(stderr, "sendmail: unsupported option %s\n", a);
            return sendmail_usage();
        }
    }
    struct config *cfg = cli_load_config(&opts);
    if (!cfg)
        return 75; /* EX_TEMPFAIL */
    const char *domain = cfg->default_domain[0] ? cfg->default_domain : cfg->hostname;
    int ret = 75;
    struct rcpt_list rcpts = {0};
    struct buf in, msg, sender;
    buf_init(&in, cfg->smtp_max_message_size + 65536);
    buf_init(&msg, cfg->smtp_max_message_size + 65536);
    buf_init(&sender, 1024);
    for (; i < argc; i++) {
        if (rcpt_list_add_header(&rcpts, argv[i], strlen(argv[i]), domain) < 0) {
            fprintf(stderr, "sendmail: bad recipient address: %s\n", argv[i]);
            ret = 64;
            goto out;
        }
    }
    /* read stdin */
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        if (!buf_append(&in, chunk, n)) {
            fprintf(stderr, "sendmail: message too large\n");
            ret = 73; /* EX_CANTCREAT */
            goto out;
        }
    }
    if (from) {
        buf_append_str(&sender, strcmp(from, "<>") == 0 ? "" : from);
    } else {
        struct passwd *pw = getpwuid(getuid());
        buf_printf(&sender, "%s@%s", pw ? pw->pw_name : "nobody", domain);
    }
    /* headers: what is there, -t recipients, Bcc removed */
    bool has_date = false, has_msgid = false, has_from = false, is_bcc = false;
    bool in_headers = true, is_rcpt_field = false;
    struct buf field; /* the header being collected for -t (with continuations) */
    buf_init(&field, 1u << 20);
    struct buf body;
    buf_init(&body, cfg->smtp_max_message_size + 65536);
    size_t pos = 0;
    bool ok = true;
    while (pos < in.len && ok) {
        const char *line = in.data + pos;
        const char *nl = memchr(line, '\n', in.len - pos);
        size_t len = nl ? (size_t)(nl - line) : in.len - pos;
        pos += len + (nl ? 1 : 0);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        /* sendmail(8): without -i, a line with a single dot ends the message */
        if (is_dot_ends && len == 1 && line[0] == '.')
            break;
        if (in_headers) {
            bool is_cont = len > 0 && (line[0] == ' ' || line[0] == '\t');
            if (!is_cont && is_rcpt_field && is_extract) {
                if (rcpt_list_add_header(&rcpts, field.data, field.len, domain) < 0) {
                    fprintf(stderr, "sendmail: bad address in header\n");
                    ret = 65;
                    goto out_free;
                }
                buf_reset(&field);
                is_rcpt_field = false;
            }
            bool is_header = is_cont || (len > 0 && memchr(line, ':', len) != NULL);
            if (len == 0 || !is_header) {
                in_headers = false;
                if (len != 0) /* no empty line between headers and body: keep the line */
                    ok = buf_append(&body, line, len) && buf_append(&body, "\r\n", 2);
                continue;
            }
            if (!is_cont) {
                has_date = has_date || header_is(line, len, "Date");
                has_msgid = has_msgid || header_is(line, len, "Message-ID");
                has_from = has_from || header_is(line, len, "From");
                is_bcc = header_is(line, len, "Bcc");
                if (header_is(line, len, "To") || header_is(line, len, "Cc") || is_bcc) {
                    is_rcpt_field = true;
                    const char *colon = memchr(line, ':', len);
                    buf_append(&field, colon + 1, len - (size_t)(colon + 1 - line));
                }
            } else if (is_rcpt_field) {
                buf_append_byte(&field, ' ');
                buf_append(&field, line, len);
            }
            if (!is_bcc) /* RFC 5322 §3.6.3: Bcc recipients stay hidden */
                ok = buf_append(&msg, line, len) && buf_append(&msg, "\r\n", 2);
        } else {
            ok = buf_append(&body, line, len) && buf_append(&body, "\r\n", 2);
        }
    }
    if (is_rcpt_field && is_extract &&
        rcpt_list_add_header(&rcpts, field.data, field.len, domain) < 0) {
        fprintf(stderr, "sendmail: bad address in header\n");
        ret = 65;
        goto out_free;
    }
    if (!ok) {
        fprintf(stderr, "sendmail: message too large\n");
        ret = 73;
        goto out_free;
    }
    if (rcpts.n == 0) {
        fprintf(stderr, "sendmail: fatal: No recipient addresses found in message header\n");
        ret = 64;
        goto out_free;
    }
    char id[UTIL_QUEUE_ID_SIZE], date[64];
    util_queue_id(id);
    time_t now = time(NULL);
    util_rfc5322_date(now, date, sizeof date);
    struct buf head;
    buf_init(&head, 0);
    buf_printf(&head, "Received: by %s (Tern, from userid %u)\r\n\tid %s; %s\r\n", cfg->hostname,
               (unsigned)getuid(), id, date);
    if (!has_date)
        buf_printf(&head, "Date: %s\r\n", date);
    if (!has_msgid) {
        struct tm tm;
        char stamp[32] = "";
        if (gmtime_r(&now, &tm))
            strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
        buf_printf(&head, "Message-ID: <%s.%s@%s>\r\n", stamp, id, cfg->hostname);
    }
    if (!has_from) {
        if (full_name)
            buf_printf(&head, "From: \"%s\" <%s>\r\n", full_name, sender.data ? sender.data : "");
        else
            buf_printf(&head, "From: %s\r\n", sender.data ? sender.data : "MAILER-DAEMON");
    }
    ok = buf_append(&head, msg.data ? msg.data : "", msg.len) && buf_append(&head, "\r\n", 2) &&
         buf_append(&head, body.data ? body.data : "", body.len);
    if (!ok) {
        fprintf(stderr, "sendmail: message too large\n");
        buf_free(&head);
        ret = 73;
        goto out_free;
    }
    if (sendmail_drop_root(cfg) < 0) {
        buf_free(&head);
        goto out_free;
    }
    struct store_source src = {.data = head.data, .len = head.len, .fd = -1, .size = head.len};
    struct buf rewritten;
    buf_init(&rewritten, 0);
    bool is_held = false;
    int frc = sendmail_filter(cfg, id, &sender, &rcpts, domain, &src, &rewritten, &is_held);
    if (frc != 0) {
        buf_free(&rewritten);
        buf_free(&head);
        ret = frc == 1 ? 0 : frc;
        goto out_free;
    }
    char *error = NULL;
    /* mailauth hook (issue 12): local submission is our users' mail: DKIM-sign it, as the
     * milters left it */
    struct buf sigs;
    buf_init(&sigs, 0);
    char dkim_domain[254];
    struct mailauth_message am = {.data = src.data, .len = src.len, .fd = -1};
    if (mailauth_sign_for_author(cfg->data_dir, &am, (int64_t)now, &sigs, dkim_domain,
                                 sizeof dkim_domain, &error) < 0) {
        fprintf(stderr, "sendmail: warning: not DKIM-signed: %s\n", error ? error : "error");
        free(error);
        error = NULL;
    }
    int qrc = is_held ? queue_enqueue_staged(cfg->data_dir, id, sender.data ? sender.data : "",
                                             (const char *const *)rcpts.items, rcpts.n,
                                             sigs.data, &src, &error)
                      : queue_enqueue(cfg->data_dir, id, sender.data ? sender.data : "",
                                      (const char *const *)rcpts.items, rcpts.n, sigs.data, &src,
                                      &error);
    if (qrc == 0 && is_held && (qrc = queue_commit_held(cfg->data_dir, id, &error)) < 0)
        queue_abort(cfg->data_dir, id);
    buf_free(&rewritten);
    if (qrc < 0) {
        buf_free(&sigs);
        fprintf(stderr, "sendmail: fatal: cannot queue the message: %s\n", error ? error : "error");
        free(error);
        buf_free(&head);
        goto out_free;
    }
    buf_free(&sigs);
    buf_free(&head);
    ret = 0;
out_free:
    buf_free(&field);
    buf_free(&body);
out:
    for (size_t k = 0; k < rcpts.n; k++)
        free(rcpts.items[k]);
    free(rcpts.items);
    buf_free(&in);
    buf_free(&msg);
    buf_free(&sender);
    config_free(cfg);
    return ret;
}
