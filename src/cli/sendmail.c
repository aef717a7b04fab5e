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
 */
#include "cli/cli.h"

#include "core/buf.h"
#include "core/config.h"
#include "core/util.h"
#include "mailauth/mailauth.h"
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
    char *error = NULL;
    /* mailauth hook (issue 12): local submission is our users' mail: DKIM-sign it */
    struct buf sigs;
    buf_init(&sigs, 0);
    char dkim_domain[254];
    struct mailauth_message am = {.data = head.data, .len = head.len, .fd = -1};
    if (mailauth_sign_for_author(cfg->data_dir, &am, (int64_t)now, &sigs, dkim_domain,
                                 sizeof dkim_domain, &error) < 0) {
        fprintf(stderr, "sendmail: warning: not DKIM-signed: %s\n", error ? error : "error");
        free(error);
        error = NULL;
    }
    if (queue_enqueue(cfg->data_dir, id, sender.data ? sender.data : "",
                      (const char *const *)rcpts.items, rcpts.n, sigs.data, &src, &error) < 0) {
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
