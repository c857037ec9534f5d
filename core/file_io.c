/* file_io: regular files only, read whole under a byte cap. See file_io.h. */
#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *fio_kind(mode_t m) {
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISDIR(m)) return "a directory";
    if (S_ISSOCK(m)) return "a socket";
    return "not a plain file";
}

int fio_open_regular(const char *path, int *fd, size_t *size, char *err, size_t errlen) {
    *fd = -1;
    *size = 0;
    /* O_NONBLOCK: open() of a FIFO with no writer would wait for one. It has
     * no effect on reads of a regular file, the only kind kept. */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? FIO_ERR_MISSING : FIO_ERR_IO;
    }
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(f);
        return FIO_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file (%s)", path, fio_kind(sb.st_mode));
        close(f);
        return FIO_ERR_TYPE;
    }
    *fd = f;
    *size = sb.st_size > 0 ? (size_t)sb.st_size : 0;
    return FIO_OK;
}

int fio_read_all(const char *path, size_t max_bytes, char **out, size_t *len, char *err,
                 size_t errlen) {
    int fd = -1, rc;
    size_t size = 0, used = 0;
    char *buf = NULL;
    *out = NULL;
    *len = 0;
    if ((rc = fio_open_regular(path, &fd, &size, err, errlen)) != FIO_OK) return rc;
    if (size > max_bytes) {
        snprintf(err, errlen, "%s: %zu bytes; at most %zu are accepted for this file", path, size,
                 max_bytes);
        rc = FIO_ERR_TOO_BIG;
        goto cleanup;
    }
    /* The size is a hint (the file may change under us): read until EOF, but
     * never keep more than max_bytes + 1 bytes. */
    size_t cap = size + 1 < 4096 ? 4096 : size + 1;
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    buf = malloc(cap + 1);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = FIO_ERR_NOMEM;
        goto cleanup;
    }
    for (;;) {
        if (used == cap) {
            if (cap > max_bytes) {
                snprintf(err, errlen, "%s: more than %zu bytes; at most %zu are accepted", path,
                         max_bytes, max_bytes);
                rc = FIO_ERR_TOO_BIG;
                goto cleanup;
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *grown = realloc(buf, ncap + 1);
            if (!grown) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = FIO_ERR_NOMEM;
                goto cleanup;
            }
            buf = grown;
            cap = ncap;
        }
        ssize_t k = read(fd, buf + used, cap - used);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
            rc = FIO_ERR_IO;
            goto cleanup;
        }
        if (k == 0) break;
        used += (size_t)k;
    }
    if (used > max_bytes) {
        snprintf(err, errlen, "%s: more than %zu bytes; at most %zu are accepted", path, max_bytes,
                 max_bytes);
        rc = FIO_ERR_TOO_BIG;
        goto cleanup;
    }
    buf[used] = '\0';
    *out = buf;
    *len = used;
    buf = NULL;
    rc = FIO_OK;
cleanup:
    free(buf);
    close(fd);
    return rc;
}
