/* Exercises libmnistnative's error paths: every misuse must return a status, never crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "mnistnative.h"

static int failures = 0;
#define EXPECT(call, status) do { mn_status s_ = (call); if (s_ != (status)) { \
    printf("FAIL %s: got %d, expected %d (%s)\n", #call, (int)s_, (int)(status), mn_last_error()); failures++; } \
    else printf("ok   %s -> %d %s\n", #call, (int)s_, s_ ? mn_last_error() : ""); } while (0)

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    uint8_t pixels[MN_PIXELS] = {0};
    float scaled[MN_PIXELS] = {0};
    float probs[MN_CLASSES];
    int32_t label = -1, labels[3];
    mn_model m = 0, m2 = 0, bad = 7;

    printf("version %s\n", mn_version());
    EXPECT(mn_load_path(NULL, &m), MN_ERR_NULL_POINTER);
    EXPECT(mn_load_path(argv[1], NULL), MN_ERR_NULL_POINTER);
    EXPECT(mn_load_path("/nonexistent/model.npz", &m), MN_ERR_NOT_FOUND);
    EXPECT(mn_load_memory((const uint8_t*)"garbage", 7, &m), MN_ERR_BAD_MODEL);
    EXPECT(mn_load_memory(NULL, 7, &m), MN_ERR_NULL_POINTER);
    EXPECT(mn_predict_u8(0, pixels, MN_PIXELS, &label), MN_ERR_INVALID_HANDLE);
    EXPECT(mn_predict_u8(0xdeadbeef12345ULL, pixels, MN_PIXELS, &label), MN_ERR_INVALID_HANDLE);

    EXPECT(mn_load_path(argv[1], &m), MN_OK);
    /* the same model from memory */
    FILE* f = fopen(argv[1], "rb");
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    uint8_t* bytes = malloc((size_t)n);
    if (fread(bytes, 1, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    EXPECT(mn_load_memory(bytes, (size_t)n, &m2), MN_OK);
    EXPECT(mn_load_memory(bytes, (size_t)n / 2, &bad), MN_ERR_BAD_MODEL);
    if (bad != 0) { printf("FAIL a failed load left out_model %llu\n", (unsigned long long)bad); failures++; }
    free(bytes);

    EXPECT(mn_predict_u8(m, NULL, MN_PIXELS, &label), MN_ERR_NULL_POINTER);
    EXPECT(mn_predict_u8(m, pixels, MN_PIXELS, NULL), MN_ERR_NULL_POINTER);
    EXPECT(mn_predict_u8(m, pixels, MN_PIXELS - 1, &label), MN_ERR_BAD_LENGTH);
    EXPECT(mn_predict_u8(m, pixels, MN_PIXELS, &label), MN_OK);
    int32_t label2 = -2;
    EXPECT(mn_predict_u8(m2, pixels, MN_PIXELS, &label2), MN_OK);
    if (label != label2 || label < 0 || label > 9) { printf("FAIL labels %d vs %d\n", label, label2); failures++; }
    EXPECT(mn_predict_f32(m, scaled, MN_PIXELS + 1, &label), MN_ERR_BAD_LENGTH);
    EXPECT(mn_predict_f32(m, scaled, MN_PIXELS, &label), MN_OK);
    /* issue 13, defect 8: NaN or Inf anywhere in the image (first, middle, last, in the scalar tail) */
    int spots[] = {0, 391, 767, 783};
    float poison[] = {NAN, INFINITY, -INFINITY};
    for (int s = 0; s < 4; s++)
        for (int p = 0; p < 3; p++) {
            scaled[spots[s]] = poison[p];
            label = -7;
            EXPECT(mn_predict_f32(m, scaled, MN_PIXELS, &label), MN_ERR_BAD_INPUT);
            if (label != -7) { printf("FAIL a refused image wrote label %d\n", label); failures++; }
            scaled[spots[s]] = 0;
        }
    scaled[5] = 3.4e38f; /* large but finite */
    EXPECT(mn_predict_f32(m, scaled, MN_PIXELS, &label), MN_OK);
    scaled[5] = 0;
    EXPECT(mn_probabilities_u8(m, pixels, MN_PIXELS, probs, MN_CLASSES - 1), MN_ERR_BAD_LENGTH);
    EXPECT(mn_probabilities_u8(m, pixels, MN_PIXELS, NULL, MN_CLASSES), MN_ERR_NULL_POINTER);
    EXPECT(mn_probabilities_u8(m, pixels, MN_PIXELS, probs, MN_CLASSES), MN_OK);
    float sum = 0; for (int j = 0; j < MN_CLASSES; j++) sum += probs[j];
    if (sum < 0.999f || sum > 1.001f) { printf("FAIL probabilities sum to %f\n", sum); failures++; }

    uint8_t* three = calloc(3, MN_PIXELS);
    EXPECT(mn_predict_batch_u8(m, three, 3 * MN_PIXELS, 3, labels, 3), MN_OK);
    EXPECT(mn_predict_batch_u8(m, three, 3 * MN_PIXELS - 1, 3, labels, 3), MN_ERR_BAD_LENGTH);
    EXPECT(mn_predict_batch_u8(m, three, 3 * MN_PIXELS, 3, labels, 2), MN_ERR_BAD_LENGTH);
    EXPECT(mn_predict_batch_u8(m, NULL, 3 * MN_PIXELS, 3, labels, 3), MN_ERR_NULL_POINTER);
    EXPECT(mn_predict_batch_u8(m, three, 3 * MN_PIXELS, 3, NULL, 3), MN_ERR_NULL_POINTER);
    EXPECT(mn_predict_batch_u8(m, NULL, 0, 0, NULL, 0), MN_OK);
    /* issue 13, defect 9: count 0 with a length that is not 0 * 784 */
    EXPECT(mn_predict_batch_u8(m, three, 2 * MN_PIXELS, 0, labels, 2), MN_ERR_BAD_LENGTH);
    EXPECT(mn_predict_batch_u8(m, three, (size_t)-1, (size_t)-1 / 2, labels, 3), MN_ERR_BAD_LENGTH);
    free(three);

    EXPECT(mn_free(m), MN_OK);
    EXPECT(mn_free(m), MN_ERR_INVALID_HANDLE);
    EXPECT(mn_predict_u8(m, pixels, MN_PIXELS, &label), MN_ERR_INVALID_HANDLE);
    EXPECT(mn_predict_batch_u8(m, NULL, 0, 0, NULL, 0), MN_ERR_INVALID_HANDLE);
    /* the freed slot is reused by the next load, but the old handle stays dead */
    mn_model m3 = 0;
    EXPECT(mn_load_path(argv[1], &m3), MN_OK);
    if (m3 == m) { printf("FAIL reused handle value\n"); failures++; }
    EXPECT(mn_probabilities_u8(m, pixels, MN_PIXELS, probs, MN_CLASSES), MN_ERR_INVALID_HANDLE);
    EXPECT(mn_predict_u8(m3, pixels, MN_PIXELS, &label), MN_OK);
    EXPECT(mn_free(m3), MN_OK);
    EXPECT(mn_free(m2), MN_OK);
    EXPECT(mn_free(0), MN_ERR_INVALID_HANDLE);

    /* further arguments: models that must be refused, by path and from memory, with mn_last_error saying why */
    for (int a = 2; a < argc; a++) {
        mn_model refused = 0;
        EXPECT(mn_load_path(argv[a], &refused), MN_ERR_BAD_MODEL);
        printf("refused %s: %s\n", argv[a], mn_last_error());
        FILE* bf = fopen(argv[a], "rb");
        if (!bf) { printf("FAIL cannot open %s\n", argv[a]); failures++; continue; }
        fseek(bf, 0, SEEK_END); long bn = ftell(bf); fseek(bf, 0, SEEK_SET);
        uint8_t* bb = malloc((size_t)bn + 1);
        if (fread(bb, 1, (size_t)bn, bf) != (size_t)bn) return 3;
        fclose(bf);
        EXPECT(mn_load_memory(bb, (size_t)bn, &refused), MN_ERR_BAD_MODEL);
        printf("refused from memory: %s\n", mn_last_error());
        if (refused != 0) { printf("FAIL a refused load left out_model %llu\n", (unsigned long long)refused); failures++; }
        free(bb);
    }

    if (failures) { printf("%d checks failed\n", failures); return 1; }
    printf("all checks passed\n");
    return 0;
}
