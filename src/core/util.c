/*
 * util.c - small shared helpers: base64 (encoding by OpenSSL EVP; one strict decoder of
 * our own with a mode for SASL's optional padding), random bytes and queue ids,
 * RFC 5322 dates, ASCII case helpers, durable-write helpers (write_all, fsync of
 * directories) and mkdir -p. See util.h. Every function is safe from any thread.
 */
#include "core/util.h"
#include "core/buf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

bool util_base64_encode(const void *data, size_t len, struct buf *out)
{
    /* EVP_EncodeBlock takes an int length; bound it before the arithmetic. */
    if (len > (size_t)INT_MAX / 4 * 3 - 3)
        return false;
    size_t need = 4 * ((len + 2) / 3);
    /* buf_reserve keeps one more byte for the NUL that EVP_EncodeBlock writes */
    if (!buf_reserve(out, need))
        return false;
    int n = EVP_EncodeBlock((unsigned char *)out->data + out->len, data, (int)len);
    if (n < 0)
        return false;
    out->len += (size_t)n;
    out->data[out->len] = '\0';
    return true;
}

char *util_base64_encode_str(const void *data, size_t len)
{
    struct buf b;
    buf_init(&b, 0);
    if (!util_base64_encode(data, len, &b)) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

int util_base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * The one decoder behind both modes. RFC 4648 §3.3: no whitespace, nothing after the
 * padding; §3.5: the bits left over after the last byte must be zero (canonical
 * encoding). is_padding_optional: input whose trailing '=' are left out entirely is also
 * taken ("Zg" for "Zg=="); padding that is present must still be complete.
 */
static bool base64_decode_mode(const char *text, size_t len, bool is_padding_optional,
                               struct buf *out)
{
    /* Strip up to two '=' of padding; then the rest must be alphabet characters. */
    size_t pad = 0;
    while (len > 0 && text[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    /* A lone sextet cannot carry a byte; padding, when present, completes the quantum. */
    if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0))
        return false;
    if (!is_padding_optional && (len + pad) % 4 != 0)
        return false;
    /* 3 bytes per full quantum; a final 2 or 3 characters carry 1 or 2 bytes. */
    size_t need = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
    if (!buf_reserve(out, need))
        return false;
    size_t start = out->len;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = util_base64_value((unsigned char)text[i]);
        if (v < 0)
            goto bad;
        acc = (acc << 6 | (unsigned)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (char)(acc >> bits & 0xff);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        goto bad;
    out->data[out->len] = '\0';
    return true;
bad:
    /* buf.h promise: a failed append leaves the buffer as it was. */
    out->len = start;
    out->data[out->len] = '\0';
    return false;
}

bool util_base64_decode(const char *text, size_t len, struct buf *out)
{
    return base64_decode_mode(text, len, false, out);
}

bool util_base64_decode_lenient(const char *text, size_t len, struct buf *out)
{
    return base64_decode_mode(text, len, true, out);
}

void util_random_bytes(void *out, size_t len)
{
    unsigned char *p = out;
    while (len > 0) {
        int chunk = len > 1u << 20 ? 1 << 20 : (int)len;
        if (RAND_bytes(p, chunk) != 1)
            abort(); /* no randomness: a broken environment we cannot serve without */
        p += chunk;
        len -= (size_t)chunk;
    }
}

/*
 * Queue ids look like Postfix's short ids: microseconds of the clock (5 hex digits of
 * the 20-bit usec field) + a per-process counter mixed with random bits, 12 upper-case
 * hex digits in all. The counter makes ids unique inside one process even within the
 * same microsecond; the random start makes collisions between processes unlikely, and
 * the spool creates its files with O_EXCL anyway.
 */
void util_queue_id(char out[UTIL_QUEUE_ID_SIZE])
{
    static atomic_uint_fast32_t counter;
    static atomic_bool is_seeded;
    if (!atomic_exchange(&is_seeded, true)) {
        uint32_t seed;
        util_random_bytes(&seed, sizeof seed);
        atomic_fetch_add(&counter, seed);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint32_t usec = (uint32_t)(ts.tv_nsec / 1000) & 0xFFFFF;
    uint32_t sec = (uint32_t)ts.tv_sec & 0xFF;
    uint32_t n = (uint32_t)atomic_fetch_add(&counter, 1);
    /* 2 hex digits of seconds, 5 of microseconds, 5 of counter: 12 digits */
    snprintf(out, UTIL_QUEUE_ID_SIZE, "%02X%05X%05X", (unsigned)sec, (unsigned)usec,
             (unsigned)(n & 0xFFFFF));
}

void util_rfc5322_date(time_t t, char *out, size_t size)
{
    /* RFC 5322 §3.3: day-name, date, time, zone; English names regardless of locale. */
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!localtime_r(&t, &tm)) {
        snprintf(out, size, "Thu, 1 Jan 1970 00:00:00 +0000");
        return;
    }
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    const char *zone = tm.tm_zone ? tm.tm_zone : "";
    bool has_zone_name = zone[0] != '\0' && strlen(zone) < 16 && zone[0] != '+' && zone[0] != '-';
    if (has_zone_name)
        snprintf(out, size, "%s, %d %s %04d %02d:%02d:%02d %c%02ld%02ld (%s)", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, sign, off / 60, off % 60, zone);
    else
        snprintf(out, size, "%s, %d %s %04d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, sign, off / 60, off % 60);
}

char *util_ascii_lower(char *s)
{
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return s;
}

bool util_has_prefix_ci(const char *s, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);
    if (len < plen)
        return false;
    for (size_t i = 0; i < plen; i++) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)prefix[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (unsigned char)(b - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

int util_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int util_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc == 0 ? 0 : -1;
}

int util_fsync_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return util_fsync_dir(".");
    if (slash == path)
        return util_fsync_dir("/");
    size_t n = (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (!dir)
        return -1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    int rc = util_fsync_dir(dir);
    int saved = errno;
    free(dir);
    errno = saved;
    return rc;
}

int util_mkdir_p(const char *path, unsigned mode)
{
    size_t len = strlen(path);
    if (len == 0) {
        errno = ENOENT;
        return -1;
    }
    char *p = strdup(path);
    if (!p)
        return -1;
    /* Create each prefix ending at a '/', then the whole path. */
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, (mode_t)mode) < 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            errno = e;
            return -1;
        }
        p[i] = saved;
    }
    struct stat st;
    int rc = stat(path, &st);
    free(p);
    if (rc < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

uint64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool util_socket_address_parse(const char *address, int *family_r, char *host, size_t hsize,
                          char *port, size_t psize)
{
    if (strncmp(address, "unix:", 5) == 0) {
        const char *path = address + 5;
        *family_r = AF_UNIX;
        return path[0] == '/' && strlen(path) < sizeof(((struct sockaddr_un *)0)->sun_path) &&
               snprintf(host, hsize, "%s", path) < (int)hsize;
    }
    const char *rest;
    if (strncmp(address, "inet:", 5) == 0)
        rest = address + 5;
    else if (strncmp(address, "inet6:", 6) == 0)
        rest = address + 6;
    else
        return false;
    *family_r = AF_INET;
    const char *colon;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (!close || close[1] != ':')
            return false;
        if ((size_t)(close - rest - 1) >= hsize)
            return false;
        memcpy(host, rest + 1, (size_t)(close - rest - 1));
        host[close - rest - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (!colon || (size_t)(colon - rest) >= hsize || colon == rest)
            return false;
        memcpy(host, rest, (size_t)(colon - rest));
        host[colon - rest] = '\0';
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) >= psize)
        return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    long n = strtol(p, NULL, 10);
    if (n < 1 || n > 65535)
        return false;
    snprintf(port, psize, "%s", p);
    /* numeric addresses only: no blocking DNS lookup when a message is in flight */
    unsigned char bin[16];
    return inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
}
