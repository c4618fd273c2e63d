/* classify.c: loads a model with libmnistnative and classifies an MNIST IDX test set.
 * usage: classify MODEL.npz IMAGES-idx3-ubyte LABELS-idx1-ubyte
 * prints "accuracy 0.9139 (9139/10000)" and the batch and single-image time per image. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mnistnative.h"

static unsigned char* read_file(const char* path, size_t* size) {
    FILE* f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "%s: cannot open\n", path); return NULL; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char* data = malloc(n > 0 ? (size_t)n : 1);
    if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "%s: cannot read\n", path); fclose(f); free(data); return NULL; }
    fclose(f);
    *size = (size_t)n;
    return data;
}

static uint32_t be32(const unsigned char* p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char** argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s MODEL.npz IMAGES-idx3-ubyte LABELS-idx1-ubyte\n", argv[0]); return 2; }
    size_t image_bytes, label_bytes;
    unsigned char* images = read_file(argv[2], &image_bytes);
    unsigned char* labels = read_file(argv[3], &label_bytes);
    if (!images || !labels) return 1;
    if (image_bytes < 16 || be32(images) != 0x803 || label_bytes < 8 || be32(labels) != 0x801) { fprintf(stderr, "not IDX image/label files\n"); return 1; }
    size_t count = be32(images + 4);
    if (be32(images + 8) != 28 || be32(images + 12) != 28 || image_bytes != 16 + count * MN_PIXELS || be32(labels + 4) != count || label_bytes != 8 + count) {
        fprintf(stderr, "IDX headers do not match the file sizes\n");
        return 1;
    }

    printf("libmnistnative %s\n", mn_version());
    mn_model model = 0;
    mn_status s = mn_load_path(argv[1], &model);
    if (s != MN_OK) { fprintf(stderr, "mn_load_path: status %d: %s\n", (int)s, mn_last_error()); return 1; }

    int32_t* predicted = malloc(count * sizeof(int32_t));
    double t0 = now_ns();
    s = mn_predict_batch_u8(model, images + 16, count * MN_PIXELS, count, predicted, count);
    double batch_ns = now_ns() - t0;
    if (s != MN_OK) { fprintf(stderr, "mn_predict_batch_u8: status %d: %s\n", (int)s, mn_last_error()); return 1; }

    size_t correct = 0;
    for (size_t i = 0; i < count; i++) correct += predicted[i] == labels[8 + i];

    /* one call per image, as an embedding application would classify them one at a time */
    size_t mismatches = 0;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        t0 = now_ns();
        for (size_t i = 0; i < count; i++) {
            int32_t label;
            if (mn_predict_u8(model, images + 16 + i * MN_PIXELS, MN_PIXELS, &label) != MN_OK) { fprintf(stderr, "mn_predict_u8: %s\n", mn_last_error()); return 1; }
            mismatches += label != predicted[i];
        }
        double t = now_ns() - t0;
        if (t < best) best = t;
    }

    printf("accuracy %.4f (%zu/%zu)\n", (double)correct / count, correct, count);
    printf("batch %.1f ns/image, single %.1f ns/image\n", batch_ns / count, best / count);
    if (mismatches) { fprintf(stderr, "single-image and batch predictions differ on %zu images\n", mismatches); return 1; }

    s = mn_free(model);
    if (s != MN_OK) { fprintf(stderr, "mn_free: %s\n", mn_last_error()); return 1; }
    free(predicted);
    free(images);
    free(labels);
    return 0;
}
