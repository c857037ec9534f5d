/* file_io: reading the files of a checkpoint directory safely.
 *
 * Owns nothing past a call. Every file a loader reads comes from a directory
 * the operator points at, possibly a mounted volume or a hub download: a
 * FIFO there would block open() forever, a symlink to /dev/zero would be read
 * forever, and a directory or device is never what the loader means. So a
 * file is opened without blocking, must be a regular file, and is read whole
 * only up to a byte cap the caller derives from what the file can hold
 * (config.json implies how large vocab.txt may be). Every error names the
 * file. */
#ifndef BERT_CORE_FILE_IO_H
#define BERT_CORE_FILE_IO_H

#include <stddef.h>

typedef enum {
    FIO_OK = 0,
    FIO_ERR_MISSING = 1, /* ENOENT: callers decide whether the file is optional */
    FIO_ERR_IO = 2,      /* cannot open or read */
    FIO_ERR_TYPE = 3,    /* not a regular file (FIFO, device, directory, socket) */
    FIO_ERR_TOO_BIG = 4, /* more than max_bytes */
    FIO_ERR_NOMEM = 5,
} fio_status;

/* JSON configuration files (config.json, tokenizer_config.json): real ones
 * are a few KB; a hub tokenizer_config.json with every added token spelled
 * out stays well under this. */
#define FIO_MAX_CONFIG_BYTES ((size_t)4 << 20)

/* Opens path read-only, without blocking on a FIFO, and checks it is a
 * regular file. Returns FIO_OK and a descriptor in *fd (the caller closes
 * it) and the file size in *size, or another status with err filled:
 * "PATH: not a regular file (a FIFO)". */
int fio_open_regular(const char *path, int *fd, size_t *size, char *err, size_t errlen);

/* Reads the regular file path whole into a malloc'd, NUL-terminated buffer
 * (*out, the caller frees it; *len excludes the NUL). A file larger than
 * max_bytes, by its size or by what a read returns, is FIO_ERR_TOO_BIG:
 * at most max_bytes + 1 bytes are ever read. On error *out is NULL and err
 * names the file. */
int fio_read_all(const char *path, size_t max_bytes, char **out, size_t *len, char *err,
                 size_t errlen);

#endif
