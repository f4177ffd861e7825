/* zstd decompression throughput on one file, in thread CPU time, for the
 * Huffman decode comparison (bench/huffman_vs_huff0.sh). The streams it is
 * given are literal-only for zstd (level 1 finds almost no matches in them:
 * the .zst is within 0.35% of shrink's Huffman frame), so zstd's
 * decompression time is its Huff0 4-stream decoder plus block overhead.
 * Declares the few stable libzstd entry points itself (no zstd.h needed);
 * build: cc -O2 huff0_decode.c -o huff0_decode -l:libzstd.so.1
 * usage: huff0_decode FILE [REPS]  ->  "<name> <bytes> <compressed> <Gsym/s median>" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

size_t ZSTD_compressBound(size_t);
size_t ZSTD_compress(void *, size_t, const void *, size_t, int);
size_t ZSTD_decompress(void *, size_t, const void *, size_t);
unsigned ZSTD_isError(size_t);

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int reps = argc > 2 ? atoi(argv[2]) : 15;
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    size_t n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *src = malloc(n), *dst = malloc(n);
    if (fread(src, 1, n, f) != n) return 1;
    fclose(f);
    size_t cap = ZSTD_compressBound(n);
    unsigned char *z = malloc(cap);
    size_t zn = ZSTD_compress(z, cap, src, n, 1);
    if (ZSTD_isError(zn)) return 1;
    double *g = malloc(reps * sizeof(double));
    for (int r = 0; r < reps; r++) {
        int inner = 10;
        double t0 = cpu_now();
        for (int i = 0; i < inner; i++)
            if (ZSTD_decompress(dst, n, z, zn) != n) return 1;
        g[r] = (double)n * inner / (cpu_now() - t0) / 1e9;
    }
    if (memcmp(src, dst, n)) return 1;
    qsort(g, reps, sizeof(double), cmp);
    const char *name = strrchr(argv[1], '/');
    printf("%s %zu %zu %.3f\n", name ? name + 1 : argv[1], n, zn, g[reps / 2]);
    return 0;
}
