/*
 * milter.c - the milter protocol client (milter.h): connecting, negotiating, sending the
 * stages of one message, reading the answers and the end-of-message modifications.
 *
 * The wire (Sendmail libmilter/docs, Postfix milter8.c): every packet is a 4-octet length
 * in network order (counting the command octet), a command octet and its data; strings
 * end with NUL. Sockets are non-blocking and every wait is a poll() bounded by the
 * milter's connect, command or content timeout.
 */
#include "milter/milter.h"

#include "core/config.h"
#include "core/log.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* MTA -> milter commands (SMFIC_*) */
#define SMFIC_ABORT   'A'
#define SMFIC_BODY    'B'
#define SMFIC_CONNECT 'C'
#define SMFIC_MACRO   'D'
#define SMFIC_BODYEOB 'E'
#define SMFIC_HELO    'H'
#define SMFIC_HEADER  'L'
#define SMFIC_MAIL    'M'
#define SMFIC_EOH     'N'
#define SMFIC_OPTNEG  'O'
#define SMFIC_QUIT    'Q'
#define SMFIC_RCPT    'R'
#define SMFIC_DATA    'T'

/* actions we allow (SMFIF_*): all of version 6 */
#define SMFIF_ALL 0x1ffu

/* protocol flags (SMFIP_*) */
#define SMFIP_NOCONNECT   0x1u
#define SMFIP_NOHELO      0x2u
#define SMFIP_NOMAIL      0x4u
#define SMFIP_NORCPT      0x8u
#define SMFIP_NOBODY      0x10u
#define SMFIP_NOHDRS      0x20u
#define SMFIP_NOEOH       0x40u
#define SMFIP_NR_HDR      0x80u
#define SMFIP_NOUNKNOWN   0x100u
#define SMFIP_NODATA      0x200u
#define SMFIP_SKIP        0x400u
#define SMFIP_RCPT_REJ    0x800u
#define SMFIP_NR_CONN     0x1000u
#define SMFIP_NR_HELO     0x2000u
#define SMFIP_NR_MAIL     0x4000u
#define SMFIP_NR_RCPT     0x8000u
#define SMFIP_NR_DATA     0x10000u
#define SMFIP_NR_UNKN     0x20000u
#define SMFIP_NR_EOH      0x40000u
#define SMFIP_NR_BODY     0x80000u
#define SMFIP_HDR_LEADSPC 0x100000u
/* what we can do without: every flag above (Postfix offers the same set) */
#define SMFIP_OFFERED 0x1fffffu

#define MILTER_VERSION 6

/* ---- parsing replies ----------------------------------------------------------------- */

/* The NUL-terminated string at *pos in [pkt, end); advances *pos. NULL if no NUL. */
static const char *take_string(const char *pkt, size_t len, size_t *pos)
{
    if (*pos >= len)
        return NULL;
    const char *s = pkt + *pos;
    const char *nul = memchr(s, '\0', len - *pos);
    if (!nul)
        return NULL;
    *pos = (size_t)(nul - pkt) + 1;
    return s;
}

static bool take_u32(const char *pkt, size_t len, size_t *pos, uint32_t *v)
{
    if (len - *pos < 4 || *pos > len)
        return false;
    uint32_t n;
    memcpy(&n, pkt + *pos, 4);
    *v = ntohl(n);
    *pos += 4;
    return true;
}

bool milter_reply_parse(const char *pkt, size_t len, struct milter_reply *r_r)
{
    memset(r_r, 0, sizeof *r_r);
    if (len < 1)
        return false;
    r_r->cmd = pkt[0];
    size_t pos = 1;
    switch (r_r->cmd) {
    case 'a': /* accept */
    case 'c': /* continue */
    case 'd': /* discard */
    case 'r': /* reject */
    case 't': /* tempfail */
    case 's': /* skip */
    case 'p': /* progress */
    case 'f': /* connection failure */
    case '4': /* shutdown */
        return true;
    case 'y': /* replycode */
    case 'q': /* quarantine */
    case '+': /* add recipient */
    case '-': /* delete recipient */
        r_r->str1 = take_string(pkt, len, &pos);
        return r_r->str1 != NULL;
    case 'e': /* change sender, args optional */
    case '2': /* add recipient with args */
        r_r->str1 = take_string(pkt, len, &pos);
        if (!r_r->str1)
            return false;
        if (pos < len)
            r_r->str2 = take_string(pkt, len, &pos);
        return pos == len || r_r->str2 != NULL;
    case 'h': /* add header */
        r_r->str1 = take_string(pkt, len, &pos);
        r_r->str2 = r_r->str1 ? take_string(pkt, len, &pos) : NULL;
        return r_r->str2 != NULL;
    case 'i': /* insert header */
    case 'm': /* change header */
        if (!take_u32(pkt, len, &pos, &r_r->index))
            return false;
        r_r->str1 = take_string(pkt, len, &pos);
        r_r->str2 = r_r->str1 ? take_string(pkt, len, &pos) : NULL;
        return r_r->str2 != NULL;
    case 'b': /* replace body (one chunk) */
        r_r->data = pkt + 1;
        r_r->data_len = len - 1;
        return true;
    case 'O': /* option negotiation, then SETSYMLIST pairs */
        if (!take_u32(pkt, len, &pos, &r_r->version) ||
            !take_u32(pkt, len, &pos, &r_r->actions) ||
            !take_u32(pkt, len, &pos, &r_r->protocol))
            return false;
        while (pos < len) {
            uint32_t stage;
            const char *list;
            if (!take_u32(pkt, len, &pos, &stage) || !(list = take_string(pkt, len, &pos)))
                return false;
            if (stage < MILTER_STAGE_COUNT)
                r_r->macros[stage] = list;
        }
        return true;
    default:
        return false;
    }
}

/* ---- addresses --------------------------------------------------------------------- */

bool milter_address_is_valid(const char *address)
{
    int family;
    char host[256], port[8];
    return util_socket_address_parse(address, &family, host, sizeof host, port, sizeof port);
}

size_t milter_specs_from_config(const struct config *cfg, const struct config_list *list,
                                struct milter_spec **specs_r, bool *is_oom_r)
{
    *specs_r = NULL;
    *is_oom_r = false;
    if (list->n == 0)
        return 0;
    struct milter_spec *specs = calloc(list->n, sizeof *specs);
    if (!specs) {
        *is_oom_r = true;
        return 0;
    }
    bool is_accept = cfg->milter_default_action && strcmp(cfg->milter_default_action, "accept") == 0;
    for (size_t i = 0; i < list->n; i++) {
        /* the item's own settings (checked at start-up) replace the milter.* ones */
        struct config_milter_item it;
        if (!config_milter_item_parse(list->items[i], &it))
            snprintf(it.address, sizeof it.address, "%s", list->items[i]);
        snprintf(specs[i].address, sizeof specs[i].address, "%s", it.address);
        specs[i].connect_timeout_ms =
            (it.connect_timeout > 0 ? (unsigned)it.connect_timeout : cfg->milter_connect_timeout) * 1000;
        specs[i].command_timeout_ms =
            (it.command_timeout > 0 ? (unsigned)it.command_timeout : cfg->milter_command_timeout) * 1000;
        specs[i].content_timeout_ms =
            (it.content_timeout > 0 ? (unsigned)it.content_timeout : cfg->milter_content_timeout) * 1000;
        bool is_item_accept = it.is_accept >= 0 ? it.is_accept == 1 : is_accept;
        specs[i].default_action = is_item_accept ? MILTER_DEFAULT_ACCEPT : MILTER_DEFAULT_TEMPFAIL;
    }
    *specs_r = specs;
    return list->n;
}

/* ---- one conversation ----------------------------------------------------------------- */

/* Where a milter's conversation stands (Postfix milter8's MILTER8_STAT_*). */
enum milter_conn_state {
    MILTER_CONN_NEW,        /* not connected yet */
    MILTER_CONN_READY,      /* connected, between messages */
    MILTER_CONN_ENVELOPE,   /* MAIL sent: a message is open (ABORT ends it) */
    MILTER_CONN_ACCEPT_MSG, /* accepted this message: asked nothing more about it */
    MILTER_CONN_ACCEPT_CON, /* accepted the session: asked nothing more */
    MILTER_CONN_REFUSE_CON, /* refused at connect or helo: its reply repeats */
    MILTER_CONN_FAILED,     /* closed after a failure: its default action from now on */
};

struct milter_conn {
    const struct milter_spec *spec;
    int fd;
    enum milter_conn_state state;
    enum milter_verdict refusal; /* REFUSE_CON: reject or tempfail ... */
    char refusal_reply[512];     /* ... with this reply */
    uint32_t actions, protocol; /* negotiated */
    const char *macros[MILTER_STAGE_COUNT];
    struct buf optneg; /* keeps the negotiated macro lists alive */
    struct buf in;     /* the last packet read */
    const char *failure; /* why the conversation broke, for the log */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait for fd to become ready for events until deadline. */
static bool wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline)
            return false;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)(deadline - now > 60000 ? 60000 : deadline - now));
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

static bool conn_connect(struct milter_conn *mc)
{
    int family;
    char host[256], port[8];
    if (!util_socket_address_parse(mc->spec->address, &family, host, sizeof host, port, sizeof port)) {
        mc->failure = "bad address";
        return false;
    }
    uint64_t deadline = mono_ms() + mc->spec->connect_timeout_ms;
    if (family == AF_UNIX) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof sun.sun_path, "%.107s", host);
        mc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (mc->fd >= 0 && connect(mc->fd, (struct sockaddr *)&sun, sizeof sun) == 0)
            return true;
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST},
                        *ai = NULL;
        if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
            mc->failure = "bad address";
            return false;
        }
        mc->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        /* requests and replies are small and alternate: no Nagle delay on either */
        int one = 1;
        if (mc->fd >= 0)
            (void)setsockopt(mc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int r = mc->fd >= 0 ? connect(mc->fd, ai->ai_addr, ai->ai_addrlen) : -1;
        freeaddrinfo(ai);
        if (r == 0)
            return true;
        if (r < 0 && errno == EINPROGRESS && wait_fd(mc->fd, POLLOUT, deadline)) {
            int err = 0;
            socklen_t el = sizeof err;
            if (getsockopt(mc->fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0)
                return true;
        }
    }
    mc->failure = errno == 0 || mono_ms() < deadline ? "cannot connect" : "connect timeout";
    return false;
}

static bool send_all(struct milter_conn *mc, const void *data, size_t len, unsigned timeout_ms)
{
    const char *p = data;
    uint64_t deadline = mono_ms() + timeout_ms;
    while (len) {
        ssize_t w = send(mc->fd, p, len, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(mc->fd, POLLOUT, deadline)) {
                mc->failure = "timeout sending";
                return false;
            }
        } else {
            mc->failure = "write error";
            return false;
        }
    }
    return true;
}

/* Send one packet: cmd and the parts concatenated. */
static bool send_packet(struct milter_conn *mc, char cmd, const void *data, size_t len,
                        unsigned timeout_ms)
{
    if (len + 1 > MILTER_MAX_PACKET) {
        mc->failure = "packet too large";
        return false;
    }
    /* one write for a small packet: a request in two segments would wait for the
     * milter's delayed ACK of the first (Nagle), 40 ms per command */
    unsigned char small[5 + 4096];
    uint32_t n = htonl((uint32_t)(len + 1));
    memcpy(small, &n, 4);
    small[4] = (unsigned char)cmd;
    if (len <= sizeof small - 5) {
        if (len)
            memcpy(small + 5, data, len);
        return send_all(mc, small, 5 + len, timeout_ms);
    }
    return send_all(mc, small, 5, timeout_ms) && send_all(mc, data, len, timeout_ms);
}

static bool recv_exact(struct milter_conn *mc, char *out, size_t len, uint64_t deadline)
{
    while (len) {
        ssize_t r = recv(mc->fd, out, len, 0);
        if (r > 0) {
            out += r;
            len -= (size_t)r;
        } else if (r == 0) {
            mc->failure = "connection closed";
            return false;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (!wait_fd(mc->fd, POLLIN, deadline)) {
                mc->failure = "timeout";
                return false;
            }
        } else {
            mc->failure = "read error";
            return false;
        }
    }
    return true;
}

/* Read one packet into mc->in and parse it. */
static bool recv_reply(struct milter_conn *mc, unsigned timeout_ms, struct milter_reply *r)
{
    uint64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        uint32_t n;
        if (!recv_exact(mc, (char *)&n, 4, deadline))
            return false;
        size_t len = ntohl(n);
        if (len < 1 || len > MILTER_MAX_PACKET) {
            mc->failure = "bad packet length";
            return false;
        }
        buf_reset(&mc->in);
        if (!buf_reserve(&mc->in, len + 1) || !recv_exact(mc, mc->in.data, len, deadline)) {
            if (!mc->failure)
                mc->failure = "out of memory";
            return false;
        }
        mc->in.len = len;
        mc->in.data[len] = '\0';
        if (!milter_reply_parse(mc->in.data, len, r)) {
            mc->failure = "malformed reply";
            return false;
        }
        if (r->cmd != 'p')
            return true;
        deadline = mono_ms() + timeout_ms; /* SMFIR_PROGRESS: start the wait again */
    }
}

/* ---- macros -------------------------------------------------------------------------- */

/* Is name in the space-separated list (with or without braces)? A milter that sent no
 * list for the stage gets what we send by default. */
static bool macro_wanted(const char *list, const char *name)
{
    if (!list)
        return true;
    size_t nl = strlen(name);
    const char *bare = name;
    size_t bl = nl;
    if (name[0] == '{') {
        bare = name + 1;
        bl = nl - 2;
    }
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != ',')
            e++;
        size_t l = (size_t)(e - p);
        if ((l == nl && memcmp(p, name, l) == 0) || (l == bl && memcmp(p, bare, l) == 0) ||
            (l == bl + 2 && p[0] == '{' && memcmp(p + 1, bare, bl) == 0))
            return true;
        p = e;
    }
    return false;
}

static void macro_add(struct buf *b, const char *list, const char *name, const char *value)
{
    if (!value || !macro_wanted(list, name))
        return;
    buf_append(b, name, strlen(name) + 1);
    buf_append(b, value, strlen(value) + 1);
}

/* SMFIC_MACRO for a command, with the macros of that stage. */
static bool send_macros(struct milter_conn *mc, char cmd, enum milter_stage stage,
                        const struct milter_message *m)
{
    const char *list = mc->macros[stage];
    struct buf b;
    buf_init(&b, MILTER_MAX_PACKET);
    buf_append_byte(&b, cmd);
    char port[16];
    switch (stage) {
    case MILTER_STAGE_CONNECT:
        macro_add(&b, list, "j", m->hostname);
        macro_add(&b, list, "{daemon_name}", m->daemon_name);
        snprintf(port, sizeof port, "%u", m->client_port);
        if (m->client_addr) {
            char underscore[600];
            snprintf(underscore, sizeof underscore, "%s [%s]", m->client_name, m->client_addr);
            macro_add(&b, list, "_", underscore);
            macro_add(&b, list, "{client_addr}", m->client_addr);
            macro_add(&b, list, "{client_name}", m->client_name);
            macro_add(&b, list, "{client_ptr}", m->client_name);
            macro_add(&b, list, "{client_port}", port);
            macro_add(&b, list, "{if_addr}", m->local_addr);
        }
        macro_add(&b, list, "v", "Tern");
        break;
    case MILTER_STAGE_HELO:
        macro_add(&b, list, "{tls_version}", m->tls_version);
        break;
    case MILTER_STAGE_MAIL:
        macro_add(&b, list, "{i}", m->queue_id);
        macro_add(&b, list, "{mail_addr}", m->sender);
        if (m->auth_user) {
            macro_add(&b, list, "{auth_authen}", m->auth_user);
            macro_add(&b, list, "{auth_type}", m->auth_mech);
        }
        break;
    case MILTER_STAGE_DATA:
    case MILTER_STAGE_EOH:
    case MILTER_STAGE_EOM:
        macro_add(&b, list, "{i}", m->queue_id);
        break;
    default:
        break;
    }
    bool ok = send_packet(mc, SMFIC_MACRO, b.data, b.len, mc->spec->command_timeout_ms);
    buf_free(&b);
    return ok;
}

static bool send_rcpt_macros(struct milter_conn *mc, const char *rcpt)
{
    struct buf b;
    buf_init(&b, MILTER_MAX_PACKET);
    buf_append_byte(&b, SMFIC_RCPT);
    macro_add(&b, mc->macros[MILTER_STAGE_RCPT], "{rcpt_addr}", rcpt);
    bool ok = send_packet(mc, SMFIC_MACRO, b.data, b.len, mc->spec->command_timeout_ms);
    buf_free(&b);
    return ok;
}

/* ---- outcome ---------------------------------------------------------------------------- */

static void outcome_set(struct milter_outcome *o, enum milter_verdict v, const char *reply)
{
    o->verdict = v;
    snprintf(o->reply, sizeof o->reply, "%s", reply);
}

static void outcome_change(struct milter_outcome *o, enum milter_change_kind kind,
                           uint32_t index, const char *name, const char *value)
{
    if (o->n_changes >= MILTER_MAX_CHANGES)
        return;
    struct milter_change *c = realloc(o->changes, (o->n_changes + 1) * sizeof *c);
    if (!c)
        return;
    o->changes = c;
    c = &o->changes[o->n_changes];
    c->kind = kind;
    c->index = index;
    c->name = strdup(name);
    c->value = value ? strdup(value) : NULL;
    if (!c->name || (value && !c->value)) {
        free(c->name);
        free(c->value);
        return;
    }
    o->n_changes++;
}

void milter_outcome_free(struct milter_outcome *o)
{
    for (size_t i = 0; i < o->n_changes; i++) {
        free(o->changes[i].name);
        free(o->changes[i].value);
    }
    free(o->changes);
    free(o->quarantine);
    buf_free(&o->new_body);
    memset(o, 0, sizeof *o);
}

/* A replycode must be a 4xx or 5xx reply; anything else is a plain reject/tempfail. */
static bool replycode_is_valid(const char *text)
{
    return (text[0] == '4' || text[0] == '5') && text[1] >= '0' && text[1] <= '9' &&
           text[2] >= '0' && text[2] <= '9' && (text[3] == ' ' || text[3] == '-');
}

/* What a stage's final answer means. 1 continue, 0 this milter is done (accept or skip
 * the rest), -1 the run ends (reject, tempfail, discard: the verdict is set). */
static int stage_answer(const struct milter_reply *r, struct milter_outcome *o, const char *addr)
{
    switch (r->cmd) {
    case 'c':
        return 1;
    case 'a':
        return 0;
    case 'r':
        outcome_set(o, MILTER_REJECT, "550 5.7.1 Command rejected");
        snprintf(o->why, sizeof o->why, "milter %s: reject", addr);
        return -1;
    case 't':
        outcome_set(o, MILTER_TEMPFAIL, "451 4.7.1 Service unavailable - try again later");
        snprintf(o->why, sizeof o->why, "milter %s: tempfail", addr);
        return -1;
    case 'd':
        outcome_set(o, MILTER_DISCARD, "250 2.0.0 Ok");
        snprintf(o->why, sizeof o->why, "milter %s: discard", addr);
        return -1;
    case 'y': {
        const char *text = r->str1;
        bool is_ok = replycode_is_valid(text);
        enum milter_verdict v = is_ok && text[0] == '5' ? MILTER_REJECT : MILTER_TEMPFAIL;
        outcome_set(o, v, is_ok ? text : "451 4.7.1 Service unavailable - try again later");
        /* a multi-line reply keeps its first line only; control octets are cut there */
        for (char *p = o->reply; *p; p++)
            if ((unsigned char)*p < 0x20) {
                *p = '\0';
                break;
            }
        snprintf(o->why, sizeof o->why, "milter %.100s: %.140s", addr, o->reply);
        return -1;
    }
    default:
        return -2; /* not a stage answer: a protocol error */
    }
}

/* ---- header split ------------------------------------------------------------------- */

/* The header fields of a message: [start, end) of each field including its CRLF. */
struct field {
    size_t start, colon, end;
};

/* Split the header section (up to the empty line); *body_r = where the body begins. */
static size_t fields_split(const char *d, size_t len, struct field *f, size_t max,
                           size_t *body_r)
{
    size_t n = 0, pos = 0;
    while (pos < len) {
        if (d[pos] == '\n' || (d[pos] == '\r' && pos + 1 < len && d[pos + 1] == '\n')) {
            pos += d[pos] == '\r' ? 2 : 1;
            break; /* the empty line */
        }
        size_t start = pos, colon = 0;
        /* a field: lines until one not followed by white space */
        for (;;) {
            const char *nl = memchr(d + pos, '\n', len - pos);
            size_t eol = nl ? (size_t)(nl - d) + 1 : len;
            if (!colon) {
                const char *c = memchr(d + pos, ':', eol - pos);
                colon = c ? (size_t)(c - d) : 0;
            }
            pos = eol;
            if (pos >= len || (d[pos] != ' ' && d[pos] != '\t'))
                break;
        }
        if (n < max && colon) {
            f[n].start = start;
            f[n].colon = colon;
            f[n].end = pos;
            n++;
        }
    }
    *body_r = pos;
    return n;
}

#define MILTER_MAX_FIELDS 1000

/* ---- the stages ------------------------------------------------------------------------- */

/* The answer to a stage command unless the milter said it sends none (nr_flag). */
static int stage_send(struct milter_conn *mc, char cmd, const void *data, size_t len,
                      uint32_t nr_flag, unsigned timeout_ms, struct milter_outcome *o)
{
    if (!send_packet(mc, cmd, data, len, timeout_ms))
        return -2;
    if (mc->protocol & nr_flag)
        return 1;
    struct milter_reply r;
    if (!recv_reply(mc, timeout_ms, &r))
        return -2;
    if (r.cmd == 's' && cmd == SMFIC_BODY)
        return 0; /* skip: no more body */
    int a = stage_answer(&r, o, mc->spec->address);
    if (a == -2)
        mc->failure = "unexpected reply";
    return a;
}

/* Connect + negotiate. */
static bool conversation_open(struct milter_conn *mc)
{
    if (!conn_connect(mc))
        return false;
    unsigned char neg[12];
    uint32_t v = htonl(MILTER_VERSION), a = htonl(SMFIF_ALL), p = htonl(SMFIP_OFFERED);
    memcpy(neg, &v, 4);
    memcpy(neg + 4, &a, 4);
    memcpy(neg + 8, &p, 4);
    if (!send_packet(mc, SMFIC_OPTNEG, neg, sizeof neg, mc->spec->command_timeout_ms))
        return false;
    struct milter_reply r;
    if (!recv_reply(mc, mc->spec->command_timeout_ms, &r))
        return false;
    if (r.cmd != 'O' || r.version < 2) {
        mc->failure = "bad option negotiation";
        return false;
    }
    /* a milter may not ask for more than we offered */
    mc->actions = r.actions & SMFIF_ALL;
    mc->protocol = r.protocol & SMFIP_OFFERED;
    /* keep the packet: macros[] point into it */
    struct buf tmp = mc->in;
    mc->in = mc->optneg;
    mc->optneg = tmp;
    for (int i = 0; i < MILTER_STAGE_COUNT; i++)
        mc->macros[i] = r.macros[i];
    return true;
}

/* A string argument list: "a\0b\0". */
static void args_add(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s) + 1);
}

/* The end of message and the modifications before its final answer. */
static int stage_eom(struct milter_conn *mc, struct milter_outcome *o, bool *has_body_r)
{
    unsigned t = mc->spec->content_timeout_ms;
    if (!send_packet(mc, SMFIC_BODYEOB, NULL, 0, t))
        return -2;
    for (;;) {
        struct milter_reply r;
        if (!recv_reply(mc, t, &r))
            return -2;
        switch (r.cmd) {
        case 'h':
            if (mc->actions & 0x01)
                outcome_change(o, MILTER_ADD_HEADER, 0, r.str1, r.str2);
            continue;
        case 'i':
            if (mc->actions & 0x01)
                outcome_change(o, MILTER_INSERT_HEADER, r.index, r.str1, r.str2);
            continue;
        case 'm':
            if (mc->actions & 0x10)
                outcome_change(o, MILTER_CHANGE_HEADER, r.index, r.str1, r.str2);
            continue;
        case '+':
        case '2':
            if (mc->actions & (0x04 | 0x80))
                outcome_change(o, MILTER_ADD_RCPT, 0, r.str1, r.str2);
            continue;
        case '-':
            if (mc->actions & 0x08)
                outcome_change(o, MILTER_DEL_RCPT, 0, r.str1, NULL);
            continue;
        case 'e':
            if (mc->actions & 0x40)
                outcome_change(o, MILTER_CHANGE_FROM, 0, r.str1, r.str2);
            continue;
        case 'q':
            if (mc->actions & 0x20) {
                free(o->quarantine);
                o->quarantine = strdup(r.str1);
            }
            continue;
        case 'b':
            if (mc->actions & 0x02) {
                if (!*has_body_r) {
                    buf_reset(&o->new_body);
                    *has_body_r = true;
                }
                if (!buf_append(&o->new_body, r.data, r.data_len)) {
                    mc->failure = "replaced body too large";
                    return -2;
                }
            }
            continue;
        default: {
            int a = stage_answer(&r, o, mc->spec->address);
            if (a == -2)
                mc->failure = "unexpected reply at end of message";
            return a;
        }
        }
    }
}

/* ---- one milter, one stage -------------------------------------------------------------- */

/* Each returns what stage_send does: 1 continue, 0 this milter accepted, -1 the verdict in
 * *o ends the stage, -2 the conversation broke (mc->failure says why). */

static int conn_connect_stage(struct milter_conn *mc, const struct milter_message *m,
                              struct milter_outcome *o)
{
    if (mc->protocol & SMFIP_NOCONNECT)
        return 1;
    if (!send_macros(mc, SMFIC_CONNECT, MILTER_STAGE_CONNECT, m))
        return -2;
    struct buf b;
    buf_init(&b, MILTER_MAX_PACKET);
    if (m->client_addr) {
        bool is_v6 = strchr(m->client_addr, ':') != NULL;
        args_add(&b, m->client_name);
        buf_append_byte(&b, is_v6 ? '6' : '4');
        uint16_t port = htons((uint16_t)m->client_port);
        buf_append(&b, &port, 2);
        args_add(&b, m->client_addr);
    } else {
        args_add(&b, "localhost");
        buf_append_byte(&b, 'U'); /* local submission: no socket family */
    }
    int a = stage_send(mc, SMFIC_CONNECT, b.data, b.len, SMFIP_NR_CONN,
                       mc->spec->command_timeout_ms, o);
    buf_free(&b);
    return a;
}

static int conn_helo_stage(struct milter_conn *mc, const struct milter_message *m,
                           struct milter_outcome *o)
{
    if ((mc->protocol & SMFIP_NOHELO) || !m->helo || !m->helo[0])
        return 1;
    if (!send_macros(mc, SMFIC_HELO, MILTER_STAGE_HELO, m))
        return -2;
    struct buf b;
    buf_init(&b, MILTER_MAX_PACKET);
    args_add(&b, m->helo);
    int a = stage_send(mc, SMFIC_HELO, b.data, b.len, SMFIP_NR_HELO,
                       mc->spec->command_timeout_ms, o);
    buf_free(&b);
    return a;
}

/* MAIL or RCPT: "<address>" after the stage's macros. */
static int conn_envelope_stage(struct milter_conn *mc, char cmd, const struct milter_message *m,
                               const char *rcpt, struct milter_outcome *o)
{
    bool is_mail = cmd == SMFIC_MAIL;
    if (mc->protocol & (is_mail ? SMFIP_NOMAIL : SMFIP_NORCPT))
        return 1;
    if (!(is_mail ? send_macros(mc, SMFIC_MAIL, MILTER_STAGE_MAIL, m)
                  : send_rcpt_macros(mc, rcpt)))
        return -2;
    struct buf b;
    buf_init(&b, MILTER_MAX_PACKET);
    buf_printf(&b, "<%s>", is_mail ? m->sender : rcpt);
    buf_append_byte(&b, '\0');
    int a = stage_send(mc, cmd, b.data, b.len, is_mail ? SMFIP_NR_MAIL : SMFIP_NR_RCPT,
                       mc->spec->command_timeout_ms, o);
    buf_free(&b);
    return a;
}

/* DATA, the header fields, end of headers, the body and end of message over the message
 * as it is now (data, len). *is_eom_r: the end of message was answered. */
static int conn_message_stage(struct milter_conn *mc, const struct milter_message *m,
                              const char *data, size_t len, struct milter_outcome *o,
                              bool *is_eom_r)
{
    *is_eom_r = false;
    unsigned t = mc->spec->command_timeout_ms;
    uint32_t p = mc->protocol;
    int a;
    if (!(p & SMFIP_NODATA)) {
        if (!send_macros(mc, SMFIC_DATA, MILTER_STAGE_DATA, m))
            return -2;
        if ((a = stage_send(mc, SMFIC_DATA, NULL, 0, SMFIP_NR_DATA, t, o)) != 1)
            return a;
    }
    struct field *fields = calloc(MILTER_MAX_FIELDS, sizeof *fields);
    if (!fields) {
        mc->failure = "out of memory";
        return -2;
    }
    struct buf b;
    buf_init(&b, MILTER_MAX_PACKET);
    size_t body_at;
    size_t n = fields_split(data, len, fields, MILTER_MAX_FIELDS, &body_at);
    t = mc->spec->content_timeout_ms;
    a = 1;
    for (size_t i = 0; !(p & SMFIP_NOHDRS) && i < n && a == 1; i++) {
        const struct field *f = &fields[i];
        buf_reset(&b);
        buf_append(&b, data + f->start, f->colon - f->start);
        buf_append_byte(&b, '\0');
        size_t v = f->colon + 1;
        if (!(p & SMFIP_HDR_LEADSPC) && v < f->end && data[v] == ' ')
            v++; /* the space after the colon belongs to the syntax, not the value */
        size_t vend = f->end;
        while (vend > v && (data[vend - 1] == '\n' || data[vend - 1] == '\r'))
            vend--;
        /* folded lines reach the milter with LF between them, as from Sendmail */
        for (size_t k = v; k < vend; k++)
            if (data[k] != '\r')
                buf_append_byte(&b, data[k]);
        buf_append_byte(&b, '\0');
        a = stage_send(mc, SMFIC_HEADER, b.data, b.len, SMFIP_NR_HDR, t, o);
    }
    free(fields);
    buf_free(&b);
    if (a != 1)
        return a;
    if (!(p & SMFIP_NOEOH)) {
        if (!send_macros(mc, SMFIC_EOH, MILTER_STAGE_EOH, m))
            return -2;
        if ((a = stage_send(mc, SMFIC_EOH, NULL, 0, SMFIP_NR_EOH, t, o)) != 1)
            return a;
    }
    for (size_t off = body_at; !(p & SMFIP_NOBODY) && off < len; off += MILTER_CHUNK) {
        size_t chunk = len - off < MILTER_CHUNK ? len - off : MILTER_CHUNK;
        a = stage_send(mc, SMFIC_BODY, data + off, chunk, SMFIP_NR_BODY, t, o);
        if (a == 0)
            break; /* skip: no more body */
        if (a != 1)
            return a;
    }
    if (!send_macros(mc, SMFIC_BODYEOB, MILTER_STAGE_EOM, m))
        return -2;
    bool has_body = false;
    a = stage_eom(mc, o, &has_body);
    if (has_body)
        o->has_new_body = true;
    if (a != -2)
        *is_eom_r = true;
    return a;
}

/* ---- a session's milters ---------------------------------------------------------------- */

struct milter_session {
    struct milter_spec *specs;
    struct milter_conn *conns;
    size_t n;
    struct milter_message info; /* the connect-level macros, strings owned */
};

enum stage_kind { STAGE_CONNECT, STAGE_HELO, STAGE_MAIL, STAGE_RCPT };

static void outcome_init(struct milter_outcome *o)
{
    memset(o, 0, sizeof *o);
    buf_init(&o->new_body, MILTER_MAX_PACKET * 64);
    o->verdict = MILTER_ACCEPT;
}

/* What a milter that cannot be asked answers: its default action. 1 (accept: go on
 * without it) or -1 (tempfail in *o). */
static int conn_default(struct milter_conn *mc, struct milter_outcome *o)
{
    if (mc->spec->default_action == MILTER_DEFAULT_ACCEPT)
        return 1;
    outcome_set(o, MILTER_TEMPFAIL, "451 4.7.1 Service unavailable - try again later");
    snprintf(o->why, sizeof o->why, "milter %.120s: %.100s", mc->spec->address,
             mc->failure ? mc->failure : "protocol error");
    return -1;
}

/* The conversation broke: logged once, closed, its default action now and from now on. */
static int conn_fail(struct milter_conn *mc, struct milter_outcome *o)
{
    log_warning("cleanup", "milter %s: %s; default action %s", mc->spec->address,
                mc->failure ? mc->failure : "protocol error",
                mc->spec->default_action == MILTER_DEFAULT_ACCEPT ? "accept" : "tempfail");
    if (mc->fd >= 0)
        close(mc->fd);
    mc->fd = -1;
    mc->state = MILTER_CONN_FAILED;
    o->verdict = MILTER_ACCEPT; /* whatever the broken conversation half-said goes */
    o->reply[0] = o->why[0] = '\0';
    return conn_default(mc, o);
}

/* One packet without waiting (ABORT, QUIT): false when the socket did not take it whole. */
static bool send_nowait(struct milter_conn *mc, char cmd)
{
    unsigned char head[5];
    uint32_t n = htonl(1);
    memcpy(head, &n, 4);
    head[4] = (unsigned char)cmd;
    return mc->fd >= 0 && send(mc->fd, head, 5, MSG_NOSIGNAL | MSG_DONTWAIT) == 5;
}

/* A milter that refused the session at connect or helo: its refusal again (-1). */
static int conn_refusal(const struct milter_conn *mc, struct milter_outcome *o)
{
    outcome_set(o, mc->refusal, mc->refusal_reply);
    snprintf(o->why, sizeof o->why, "milter %.100s: %.140s", mc->spec->address,
             mc->refusal_reply);
    return -1;
}

/* The answer a to a connect or helo stage, remembered for the rest of the session. */
static int conn_connection_answer(struct milter_conn *mc, int a, struct milter_outcome *o)
{
    if (a == -1 && o->verdict == MILTER_DISCARD) {
        /* Postfix: discard is for messages, not for connect or helo */
        mc->failure = "discard at connect or helo";
        a = -2;
    }
    if (a == -2)
        return conn_fail(mc, o);
    if (a == 0)
        mc->state = MILTER_CONN_ACCEPT_CON;
    if (a == -1) {
        mc->state = MILTER_CONN_REFUSE_CON;
        mc->refusal = o->verdict;
        snprintf(mc->refusal_reply, sizeof mc->refusal_reply, "%s", o->reply);
    }
    return a == 0 ? 1 : a;
}

static int conn_stage(struct milter_session *ms, struct milter_conn *mc, enum stage_kind kind,
                      const struct milter_message *m, const char *rcpt,
                      struct milter_outcome *o)
{
    bool is_connection = kind == STAGE_CONNECT || kind == STAGE_HELO;
    switch (mc->state) {
    case MILTER_CONN_FAILED:
        return conn_default(mc, o);
    case MILTER_CONN_REFUSE_CON:
        return conn_refusal(mc, o);
    case MILTER_CONN_ACCEPT_CON:
        return 1;
    case MILTER_CONN_ACCEPT_MSG:
        if (kind == STAGE_RCPT)
            return 1;
        break;
    case MILTER_CONN_NEW:
        /* connect first (a session always starts with the connect stage; this is for
         * one that did not) */
        if (!conversation_open(mc))
            return conn_fail(mc, o);
        mc->state = MILTER_CONN_READY;
        if (kind != STAGE_CONNECT) {
            int a = conn_connection_answer(mc, conn_connect_stage(mc, &ms->info, o), o);
            if (a != 1 || mc->state != MILTER_CONN_READY)
                return a;
        }
        break;
    default:
        break;
    }
    if (kind == STAGE_MAIL &&
        (mc->state == MILTER_CONN_ENVELOPE || mc->state == MILTER_CONN_ACCEPT_MSG)) {
        /* the last transaction ended without its message: close it first */
        if (!send_packet(mc, SMFIC_ABORT, NULL, 0, mc->spec->command_timeout_ms))
            return conn_fail(mc, o);
        mc->state = MILTER_CONN_READY;
    }
    int a;
    switch (kind) {
    case STAGE_CONNECT:
        a = conn_connect_stage(mc, m, o);
        break;
    case STAGE_HELO:
        a = conn_helo_stage(mc, m, o);
        break;
    case STAGE_MAIL:
        a = conn_envelope_stage(mc, SMFIC_MAIL, m, NULL, o);
        break;
    default:
        a = conn_envelope_stage(mc, SMFIC_RCPT, m, rcpt, o);
        break;
    }
    if (is_connection)
        return conn_connection_answer(mc, a, o);
    if (a == -2)
        return conn_fail(mc, o);
    if (kind == STAGE_MAIL)
        mc->state = MILTER_CONN_ENVELOPE; /* even refused: ABORT ends it */
    if (a == 0)
        mc->state = MILTER_CONN_ACCEPT_MSG;
    return a == 0 ? 1 : a;
}

/* One envelope stage through the milters in order, until one does not continue. */
static void session_stage(struct milter_session *ms, enum stage_kind kind,
                          const struct milter_message *m, const char *rcpt,
                          struct milter_outcome *o)
{
    outcome_init(o);
    for (size_t i = 0; i < ms->n; i++)
        if (conn_stage(ms, &ms->conns[i], kind, m, rcpt, o) == -1)
            return;
}

struct milter_session *milter_session_new(const struct milter_spec *milters, size_t n,
                                          const struct milter_message *info)
{
    struct milter_session *ms = calloc(1, sizeof *ms);
    if (!ms)
        return NULL;
    ms->n = n;
    ms->specs = calloc(n ? n : 1, sizeof *ms->specs);
    ms->conns = calloc(n ? n : 1, sizeof *ms->conns);
    const char *unknown = "unknown";
    ms->info.client_name = strdup(info->client_name ? info->client_name : unknown);
    ms->info.client_addr = info->client_addr ? strdup(info->client_addr) : NULL;
    ms->info.client_port = info->client_port;
    ms->info.local_addr = strdup(info->local_addr ? info->local_addr : "");
    ms->info.hostname = strdup(info->hostname ? info->hostname : "localhost");
    ms->info.daemon_name = strdup(info->daemon_name ? info->daemon_name : "");
    if (!ms->specs || !ms->conns || !ms->info.client_name ||
        (info->client_addr && !ms->info.client_addr) || !ms->info.local_addr ||
        !ms->info.hostname || !ms->info.daemon_name) {
        ms->n = 0;
        milter_session_free(ms);
        return NULL;
    }
    memcpy(ms->specs, milters, n * sizeof *ms->specs);
    for (size_t i = 0; i < n; i++) {
        struct milter_conn *mc = &ms->conns[i];
        mc->spec = &ms->specs[i];
        mc->fd = -1;
        mc->state = MILTER_CONN_NEW;
        buf_init(&mc->in, MILTER_MAX_PACKET + 1);
        buf_init(&mc->optneg, MILTER_MAX_PACKET + 1);
    }
    return ms;
}

void milter_session_connect(struct milter_session *ms, struct milter_outcome *o)
{
    outcome_init(o);
    for (size_t i = 0; i < ms->n; i++) {
        struct milter_conn *mc = &ms->conns[i];
        if (mc->state == MILTER_CONN_NEW) {
            if (!conversation_open(mc)) {
                if (conn_fail(mc, o) == -1)
                    return;
                continue;
            }
            mc->state = MILTER_CONN_READY;
        }
        if (conn_stage(ms, mc, STAGE_CONNECT, &ms->info, NULL, o) == -1)
            return;
    }
}

void milter_session_helo(struct milter_session *ms, const struct milter_message *m,
                         struct milter_outcome *o)
{
    session_stage(ms, STAGE_HELO, m, NULL, o);
}

void milter_session_mail(struct milter_session *ms, const struct milter_message *m,
                         struct milter_outcome *o)
{
    session_stage(ms, STAGE_MAIL, m, NULL, o);
}

void milter_session_rcpt(struct milter_session *ms, const char *rcpt, struct milter_outcome *o)
{
    static const struct milter_message none;
    session_stage(ms, STAGE_RCPT, &none, rcpt, o);
}

void milter_session_message(struct milter_session *ms, const struct milter_message *m,
                            struct milter_outcome *o)
{
    outcome_init(o);
    struct buf current; /* the message as the previous milters left it */
    buf_init(&current, 0);
    const char *data = m->data;
    size_t len = m->len;
    for (size_t i = 0; i < ms->n; i++) {
        struct milter_conn *mc = &ms->conns[i];
        int r;
        if (mc->state == MILTER_CONN_REFUSE_CON) {
            conn_refusal(mc, o);
            break;
        }
        if (mc->state == MILTER_CONN_FAILED) {
            if (conn_default(mc, o) == -1)
                break;
            continue;
        }
        if (mc->state != MILTER_CONN_ENVELOPE)
            continue; /* accepted the session or the message, or never saw its MAIL */
        size_t changes_before = o->n_changes;
        bool had_body = o->has_new_body;
        bool is_eom = false;
        r = conn_message_stage(mc, m, data, len, o, &is_eom);
        if (r == -2) {
            /* its half-made changes go with it */
            while (o->n_changes > changes_before) {
                o->n_changes--;
                free(o->changes[o->n_changes].name);
                free(o->changes[o->n_changes].value);
            }
            o->has_new_body = had_body;
            if (conn_fail(mc, o) == -1)
                break;
            continue;
        }
        if (is_eom)
            mc->state = MILTER_CONN_READY;
        else if (r == 0)
            mc->state = MILTER_CONN_ACCEPT_MSG;
        if (r == -1)
            break;
        /* the next milter sees this one's header and body changes */
        if (i + 1 < ms->n && (o->n_changes > changes_before || o->has_new_body != had_body)) {
            struct buf next;
            buf_init(&next, 0);
            if (milter_message_rewrite(m->data, m->len, o, UINT64_MAX, &next) == 0) {
                buf_free(&current);
                current = next;
                data = current.data ? current.data : "";
                len = current.len;
            } else {
                buf_free(&next);
            }
        }
    }
    buf_free(&current);
    milter_session_abort(ms, false); /* the milters the message did not reach */
}

void milter_session_abort(struct milter_session *ms, bool is_nowait)
{
    for (size_t i = 0; ms && i < ms->n; i++) {
        struct milter_conn *mc = &ms->conns[i];
        if (mc->state != MILTER_CONN_ENVELOPE && mc->state != MILTER_CONN_ACCEPT_MSG)
            continue;
        bool ok = is_nowait ? send_nowait(mc, SMFIC_ABORT)
                            : send_packet(mc, SMFIC_ABORT, NULL, 0, mc->spec->command_timeout_ms);
        if (ok) {
            mc->state = MILTER_CONN_READY;
            continue;
        }
        if (!mc->failure)
            mc->failure = "cannot send abort";
        struct milter_outcome ignored;
        outcome_init(&ignored);
        conn_fail(mc, &ignored);
        milter_outcome_free(&ignored);
    }
}

bool milter_session_is_active(const struct milter_session *ms)
{
    for (size_t i = 0; ms && i < ms->n; i++) {
        const struct milter_conn *mc = &ms->conns[i];
        if (mc->state == MILTER_CONN_ACCEPT_CON ||
            (mc->state == MILTER_CONN_FAILED &&
             mc->spec->default_action == MILTER_DEFAULT_ACCEPT))
            continue;
        return true;
    }
    return false;
}

void milter_session_free(struct milter_session *ms)
{
    if (!ms)
        return;
    for (size_t i = 0; i < ms->n; i++) {
        struct milter_conn *mc = &ms->conns[i];
        if (mc->fd >= 0) {
            (void)send_nowait(mc, SMFIC_QUIT); /* politely, never waiting */
            close(mc->fd);
        }
        buf_free(&mc->in);
        buf_free(&mc->optneg);
    }
    free((char *)ms->info.client_name);
    free((char *)ms->info.client_addr);
    free((char *)ms->info.local_addr);
    free((char *)ms->info.hostname);
    free((char *)ms->info.daemon_name);
    free(ms->specs);
    free(ms->conns);
    free(ms);
}

void milter_run(const struct milter_spec *milters, size_t n, const struct milter_message *msg,
                struct milter_outcome *o)
{
    struct milter_session *ms = milter_session_new(milters, n, msg);
    if (!ms) {
        outcome_init(o);
        outcome_set(o, MILTER_TEMPFAIL, "451 4.3.0 Error: out of memory");
        return;
    }
    milter_session_connect(ms, o);
    if (o->verdict == MILTER_ACCEPT) {
        milter_outcome_free(o);
        milter_session_helo(ms, msg, o);
    }
    if (o->verdict == MILTER_ACCEPT) {
        milter_outcome_free(o);
        milter_session_mail(ms, msg, o);
    }
    /* a local submission has no reply per recipient: a refused one refuses the message */
    for (size_t i = 0; o->verdict == MILTER_ACCEPT && i < msg->n_rcpts; i++) {
        milter_outcome_free(o);
        milter_session_rcpt(ms, msg->rcpts[i], o);
    }
    if (o->verdict == MILTER_ACCEPT) {
        milter_outcome_free(o);
        milter_session_message(ms, msg, o);
    }
    milter_session_free(ms);
}

/* ---- rewriting ------------------------------------------------------------------------ */

/* "Name: value" with the milter's LF folding turned into CRLF. */
static bool field_format(struct buf *out, const char *name, const char *value)
{
    bool ok = buf_append_str(out, name) && buf_append_str(out, ": ");
    for (const char *p = value; ok && *p; p++) {
        if (*p == '\r')
            continue;
        ok = *p == '\n' ? buf_append_str(out, "\r\n") : buf_append_byte(out, *p);
    }
    return ok && buf_append_str(out, "\r\n");
}

/* A header field of the rewritten message: text, or a kept original. */
struct out_field {
    const char *text; /* the field from the original message, or ... */
    size_t len;
    char *made;       /* ... one a milter made (owned) */
    char name[128];   /* for CHANGE_HEADER matching */
    bool is_deleted;
};

int milter_message_rewrite(const char *data, size_t len, const struct milter_outcome *o,
                           uint64_t max_size, struct buf *out)
{
    struct field *fields = calloc(MILTER_MAX_FIELDS, sizeof *fields);
    if (!fields)
        return -1;
    size_t body_at;
    size_t n = fields_split(data, len, fields, MILTER_MAX_FIELDS, &body_at);
    size_t cap = n + o->n_changes + 1;
    struct out_field *of = calloc(cap, sizeof *of);
    if (!of) {
        free(fields);
        return -1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++, m++) {
        of[m].text = data + fields[i].start;
        of[m].len = fields[i].end - fields[i].start;
        size_t nl = fields[i].colon - fields[i].start;
        snprintf(of[m].name, sizeof of[m].name, "%.*s", (int)(nl < 127 ? nl : 127),
                 data + fields[i].start);
    }
    int rc = 0;
    for (size_t c = 0; c < o->n_changes && rc == 0; c++) {
        const struct milter_change *ch = &o->changes[c];
        if (ch->kind != MILTER_ADD_HEADER && ch->kind != MILTER_INSERT_HEADER &&
            ch->kind != MILTER_CHANGE_HEADER)
            continue;
        struct buf f;
        buf_init(&f, 0);
        if (ch->kind != MILTER_CHANGE_HEADER || (ch->value && ch->value[0]))
            if (!field_format(&f, ch->name, ch->value ? ch->value : "")) {
                buf_free(&f);
                rc = -1;
                break;
            }
        size_t at = m;
        if (ch->kind == MILTER_INSERT_HEADER) {
            /* index counts the fields that are there (deleted ones are gone) */
            size_t live = 0;
            for (at = 0; at < m && live < ch->index; at++)
                if (!of[at].is_deleted)
                    live++;
        } else if (ch->kind == MILTER_CHANGE_HEADER) {
            /* the index-th field of that name (1-based; 0 treated as 1, like Postfix) */
            uint32_t want = ch->index ? ch->index : 1, seen = 0;
            for (at = 0; at < m; at++)
                if (!of[at].is_deleted && strcasecmp(of[at].name, ch->name) == 0 &&
                    ++seen == want)
                    break;
            if (at == m) {
                /* no such field: a change adds it (Sendmail), a delete does nothing */
                if (!f.len) {
                    buf_free(&f);
                    continue;
                }
            } else {
                free(of[at].made);
                of[at].made = NULL;
                if (!f.len) {
                    of[at].is_deleted = true;
                } else {
                    /* the field keeps the name as the message spelt it */
                    struct buf g;
                    buf_init(&g, 0);
                    if (!field_format(&g, of[at].name, ch->value))
                        rc = -1;
                    of[at].made = buf_steal(&g);
                    of[at].text = NULL;
                }
                buf_free(&f);
                continue;
            }
        }
        if (m >= cap) {
            buf_free(&f);
            continue;
        }
        memmove(&of[at + 1], &of[at], (m - at) * sizeof *of);
        memset(&of[at], 0, sizeof *of);
        snprintf(of[at].name, sizeof of[at].name, "%s", ch->name);
        of[at].made = buf_steal(&f);
        m++;
    }
    for (size_t i = 0; rc == 0 && i < m; i++) {
        if (of[i].is_deleted)
            continue;
        bool ok = of[i].made ? buf_append_str(out, of[i].made)
                             : buf_append(out, of[i].text, of[i].len);
        if (!ok)
            rc = -1;
    }
    if (rc == 0) {
        bool ok = buf_append_str(out, "\r\n");
        if (o->has_new_body)
            ok = ok && buf_append(out, o->new_body.data ? o->new_body.data : "", o->new_body.len);
        else
            ok = ok && buf_append(out, data + body_at, len - body_at);
        if (!ok || out->len > max_size)
            rc = -1;
    }
    for (size_t i = 0; i < m; i++)
        free(of[i].made);
    free(of);
    free(fields);
    return rc;
}
