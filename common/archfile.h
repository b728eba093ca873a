/* archfile.h — file helpers of session archives, shared by msrs-archiver
 * (which writes them) and msrs-replay --refit (which writes refitted
 * copies): SHA-256 for the manifest (libavutil's av_sha) and removing
 * folders (making them is cli_mkdirs: tools without libav* need it too). */
#ifndef MSRS_ARCHFILE_H
#define MSRS_ARCHFILE_H
#include <stdint.h>

/* hex: 64 lowercase hex digits + NUL; *bytes: the file's size. 0 or -1. */
int sha256_file(const char *path, char hex[65], int64_t *bytes);
/* rm -rf (never follows links). */
void rm_tree(const char *path);

#endif
