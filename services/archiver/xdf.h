/* xdf.h — an XDF 1.0 writer (prefix xdf_): the file format of LSL's
 * LabRecorder, so pyxdf, MATLAB's load_xdf and SigViewer read msrs
 * sessions. A file is "XDF:" then chunks [NumLengthBytes][Length][Tag
 * u16][content], little-endian: FileHeader (1), StreamHeader (2), Samples
 * (3), ClockOffset (4), Boundary (5), StreamFooter (6). Timestamps are
 * seconds on the stream's own clock; ClockOffset chunks say how far that
 * clock is behind the recorder's at a time on the stream's clock (the
 * reader adds a fit of them), as LabRecorder writes them. */
#ifndef MSRS_XDF_H
#define MSRS_XDF_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct xdf_writer {
    FILE *f;
    int64_t chunks_since_boundary;
    int error;
} xdf_writer;

int xdf_open(xdf_writer *w, const char *path);
/* Stream header for a numeric (double64) or string stream (channels 1,
 * format "string"); srate 0 = irregular. */
void xdf_stream_header(xdf_writer *w, uint32_t id, const char *name, const char *type,
                       int channels, double srate, const char *format, const char *source_id);
/* n samples of a double64 stream: t[i] seconds, values row-major. */
void xdf_samples(xdf_writer *w, uint32_t id, size_t n, const double *t, int channels,
                 const double *values);
/* One sample of a string stream. */
void xdf_string_sample(xdf_writer *w, uint32_t id, double t, const char *text);
void xdf_clock_offset(xdf_writer *w, uint32_t id, double collection_time, double offset);
void xdf_boundary(xdf_writer *w);
void xdf_stream_footer(xdf_writer *w, uint32_t id, double first, double last, int64_t count,
                       const double *offset_times, const double *offset_values, size_t offsets);
/* Closes; returns 0 when every write succeeded. */
int xdf_close(xdf_writer *w);

#endif
