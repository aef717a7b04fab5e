/*
 * test_tmpdir.h - the private temporary folder of a unit test program: tmp_root (made by
 * the program's setup with mkdtemp) and rm_rf to remove it again. Header-only (static),
 * included by the store and queue tests, which all work in a scratch data folder.
 */
#ifndef TERN_TEST_TMPDIR_H
#define TERN_TEST_TMPDIR_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char tmp_root[256];

/* rm -rf of the test directory (bounded depth, only our own temp dir). */
static void rm_rf(const char *path, int depth)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        if (depth < 10)
            rm_rf(p, depth + 1);
    }
    closedir(d);
    rmdir(path);
}

#endif
