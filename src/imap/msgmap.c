/*
 * msgmap.c - read-only mmap of a stored message, shared by FETCH and SEARCH (msgmap.h).
 * Mapping instead of reading keeps message bytes out of the session's heap.
 */
#include "imap/msgmap.h"

#include "store/store.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

bool imap_message_map(struct store_mailbox *box, size_t i, struct imap_message_map *m)
{
    m->bytes = NULL;
    m->len = 0;
    m->is_mapped = false;
    int fd = -1;
    char *err = NULL;
    if (store_message_open(box, i, &fd, &err) < 0) {
        int e = errno; /* ENOENT: expunged (store.h) */
        free(err);
        errno = e;
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX / 2) {
        close(fd);
        errno = EIO;
        return false;
    }
    m->len = (size_t)st.st_size;
    if (m->len == 0) {
        m->bytes = "";
    } else {
        void *p = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            m->bytes = p;
            m->is_mapped = true;
        }
    }
    close(fd);
    if (!m->bytes)
        errno = EIO;
    return m->bytes != NULL;
}

void imap_message_unmap(struct imap_message_map *m)
{
    if (m->is_mapped)
        munmap((void *)m->bytes, m->len);
    m->bytes = NULL;
    m->len = 0;
    m->is_mapped = false;
}
