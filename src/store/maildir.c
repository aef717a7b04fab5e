/*
 * maildir.c - Maildir++ naming rules (Dovecot compatible): flag letters of ":2,<flags>",
 * S=/W= sizes in base names, IMAP mailbox names <-> ".A.B" folder names, folder creation.
 */
#include "store/store-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Maildir spec (cr.yp.to/proto/maildir.html): D draft, F flagged, P passed, R replied,
 * S seen, T trashed; letters in ASCII order. */
static const struct {
    char letter;
    unsigned flag;
} maildir_flags[] = {
    {'D', STORE_FLAG_DRAFT}, {'F', STORE_FLAG_FLAGGED}, {'R', STORE_FLAG_ANSWERED},
    {'S', STORE_FLAG_SEEN},  {'T', STORE_FLAG_DELETED},
};
#define N_MAILDIR_FLAGS (sizeof maildir_flags / sizeof maildir_flags[0])

static unsigned flag_of_letter(char c)
{
    for (size_t i = 0; i < N_MAILDIR_FLAGS; i++)
        if (maildir_flags[i].letter == c)
            return maildir_flags[i].flag;
    return 0;
}

unsigned store_maildir_flags_parse(const char *info)
{
    unsigned flags = 0;
    if (!info || strncmp(info, "2,", 2) != 0)
        return 0;
    for (const char *p = info + 2; *p; p++)
        flags |= flag_of_letter(*p);
    return flags;
}

int store_maildir_name_with_flags(const char *base, unsigned flags, const char *old_info, char *out,
                                  size_t size)
{
    /* Letters we do not interpret (P, keyword letters a-z) are kept. */
    char letters[64];
    size_t n = 0;
    for (size_t i = 0; i < N_MAILDIR_FLAGS; i++)
        if (flags & maildir_flags[i].flag)
            letters[n++] = maildir_flags[i].letter;
    if (old_info && strncmp(old_info, "2,", 2) == 0) {
        for (const char *p = old_info + 2; *p && n + 1 < sizeof letters; p++) {
            if (flag_of_letter(*p) || *p < 0x21 || *p > 0x7e || memchr(letters, *p, n))
                continue;
            letters[n++] = *p;
        }
    }
    /* insertion sort: ASCII order as the spec asks */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && letters[j - 1] > letters[j]; j--) {
            char t = letters[j];
            letters[j] = letters[j - 1];
            letters[j - 1] = t;
        }
    letters[n] = '\0';
    int len = snprintf(out, size, "%s:2,%s", base, letters);
    return len < 0 || (size_t)len >= size ? -1 : 0;
}

bool store_maildir_name_size(const char *base, char key, uint64_t *value_r)
{
    char pat[4] = {',', key, '=', '\0'};
    const char *p = strstr(base, pat);
    if (!p)
        return false;
    p += 3;
    if (*p < '0' || *p > '9')
        return false;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (*p != '\0' && *p != ',' && *p != ':')
        return false;
    *value_r = v;
    return true;
}

int store_mailbox_name_to_dir(const char *name, char *dir, size_t dir_size, char *canon,
                              size_t canon_size, char **error_r)
{
    size_t len = strlen(name);
    if (len == 0 || len > 255) {
        store_error(error_r, "Invalid mailbox name");
        return -1;
    }
    char name_copy[256]; /* name may alias canon */
    memcpy(name_copy, name, len + 1);
    name = name_copy;
    /* RFC 3501 §5.1: INBOX is case-insensitive, also as the first hierarchy level. */
    const char *rest = name;
    char tmp[300];
    if (strncasecmp(name, "INBOX", 5) == 0 && (name[5] == '\0' || name[5] == '/')) {
        snprintf(tmp, sizeof tmp, "INBOX%s", name + 5);
        rest = tmp;
    }
    if (strcmp(rest, "INBOX") == 0) {
        if (dir_size < 1 || canon_size < 6)
            return -1;
        dir[0] = '\0';
        snprintf(canon, canon_size, "INBOX");
        return 0;
    }
    /* '.' is the on-disk separator of Maildir++, so it cannot appear in a name; empty
     * levels, control characters and wildcards are refused too. */
    const char *prev = "/";
    for (const char *p = rest; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f || c == '.' || c == '*' || c == '%' || c == '\\') {
            store_error(error_r, "Invalid mailbox name");
            return -1;
        }
        if (c == '/' && *prev == '/') {
            store_error(error_r, "Invalid mailbox name");
            return -1;
        }
        prev = p;
    }
    if (rest[0] == '/' || rest[strlen(rest) - 1] == '/') {
        store_error(error_r, "Invalid mailbox name");
        return -1;
    }
    if (strlen(rest) + 2 > dir_size || strlen(rest) + 1 > canon_size) {
        store_error(error_r, "Mailbox name too long");
        return -1;
    }
    size_t o = 0;
    dir[o++] = '.';
    for (const char *p = rest; *p; p++)
        dir[o++] = *p == '/' ? '.' : *p;
    dir[o] = '\0';
    snprintf(canon, canon_size, "%s", rest);
    return 0;
}

int store_mailbox_path(const char *home, const char *canon_name, char *out, size_t size)
{
    char dir[300], canon[300];
    if (store_mailbox_name_to_dir(canon_name, dir, sizeof dir, canon, sizeof canon, NULL) < 0)
        return -1;
    int n = snprintf(out, size, "%s/Maildir%s%s", home, dir[0] ? "/" : "", dir);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int store_maildir_create(const char *path, bool is_inbox)
{
    static const char *const subdirs[] = {"cur", "new", "tmp"};
    char p[4200];
    bool is_created = false;
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", path, subdirs[i]);
        if (mkdir(p, 0700) == 0) {
            is_created = true;
            continue;
        }
        if (errno == ENOENT) {
            if (store_io_mkdir_p(p) < 0)
                return -1;
            is_created = true;
        } else if (errno != EEXIST) {
            return -1;
        }
    }
    if (!is_inbox) {
        /* Maildir++: a folder is marked by an empty "maildirfolder" file. */
        snprintf(p, sizeof p, "%s/maildirfolder", path);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return -1;
        close(fd);
    }
    /* a delivery into a folder made just now must not lose the folder in a crash */
    if (is_created && store_io_fsync_dir(path) < 0)
        return -1;
    return 0;
}

char **store_keywords_parse(const char *text)
{
    if (!text || !*text)
        return NULL;
    size_t n = 1;
    for (const char *p = text; *p; p++)
        if (*p == ' ')
            n++;
    char **kw = calloc(n + 1, sizeof *kw);
    if (!kw)
        return NULL;
    size_t i = 0;
    const char *p = text;
    while (*p && i < n) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0)
            kw[i++] = strndup(p, len);
        p += len;
        if (*p == ' ')
            p++;
    }
    return kw;
}

char **store_keywords_copy(char *const *kw)
{
    size_t n = 0;
    while (kw && kw[n])
        n++;
    if (n == 0)
        return NULL;
    char **c = calloc(n + 1, sizeof *c);
    for (size_t i = 0; c && i < n; i++) {
        if (!(c[i] = strdup(kw[i]))) {
            store_keywords_free(c);
            return NULL;
        }
    }
    return c;
}

char *store_keywords_join(const char *const *kw)
{
    size_t len = 1;
    for (size_t i = 0; kw && kw[i]; i++)
        len += strlen(kw[i]) + 1;
    char *s = malloc(len);
    if (!s)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; kw && kw[i]; i++) {
        if (o)
            s[o++] = ' ';
        size_t l = strlen(kw[i]);
        memcpy(s + o, kw[i], l);
        o += l;
    }
    s[o] = '\0';
    return s;
}

void store_keywords_free(char **kw)
{
    for (size_t i = 0; kw && kw[i]; i++)
        free(kw[i]);
    free(kw);
}
