/* mnistnative.h: C ABI of libmnistnative.so (MnistNative.Inference published with NativeAOT).
 *
 * Every function returns an mn_status (except mn_version / mn_last_error) and never lets an error
 * escape as a crash: null pointers, short buffers, a freed or unknown handle and a bad model file all give
 * a status code, with a one-line message from mn_last_error() on the same thread.
 * Models are opaque 64-bit handles (slot + generation): a freed handle is detected, never reused by accident.
 * All functions are thread-safe; one model may serve many threads. The library frees what it allocates:
 * call mn_free for each loaded model; strings returned by the library belong to it.
 */
#ifndef MNISTNATIVE_H
#define MNISTNATIVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MN_PIXELS 784  /* one 28x28 image, row-major */
#define MN_CLASSES 10

typedef enum mn_status {
    MN_OK = 0,
    MN_ERR_NULL_POINTER = 1,    /* a required pointer argument was NULL */
    MN_ERR_BAD_LENGTH = 2,      /* a buffer length is wrong (pixels != 784, probs < 10, labels too short, ...) */
    MN_ERR_INVALID_HANDLE = 3,  /* the model handle is 0, unknown, or already freed */
    MN_ERR_NOT_FOUND = 4,       /* the model file does not exist */
    MN_ERR_BAD_MODEL = 5,       /* the model file/bytes are not a valid model (names, shapes, dtypes, NaN/Inf) */
    MN_ERR_OUT_OF_MEMORY = 6,
    MN_ERR_INTERNAL = 7,        /* any other failure; see mn_last_error */
    MN_ERR_BAD_INPUT = 8        /* an input value is unusable: a NaN or infinite pixel in mn_predict_f32 */
} mn_status;

typedef uint64_t mn_model; /* 0 is never a valid model */

/* The library version and the kernel this CPU runs, e.g. "0.1.0 (avx512 kernel)": static storage, never freed. */
const char* mn_version(void);

/* The message of the last failed call on this thread ("" if none). Valid until the next failing call
 * on this thread; owned by the library. */
const char* mn_last_error(void);

/* Loads a model: a seed-format .npz (w1 (H,784), b1, ..., wL (10,H), bL; float64 or float32) or an ONNX MLP graph
   (Gemm or MatMul + Add, Relu, Flatten/Reshape, constant normalisation, final Softmax; as PyTorch and tf2onnx
   write them), told apart by content. An unsupported graph returns MN_ERR_BAD_MODEL; mn_last_error names the
   node, its op type and why. npz_bytes may hold either format. */
mn_status mn_load_path(const char* path_utf8, mn_model* out_model);
mn_status mn_load_memory(const uint8_t* npz_bytes, size_t length, mn_model* out_model);

/* Frees a model. Freeing twice, or freeing 0, returns MN_ERR_INVALID_HANDLE. Calls already running on
 * other threads finish safely before the memory is released. */
mn_status mn_free(mn_model model);

/* One image of pixels_length == 784 raw bytes (scaled by 1/255 inside) -> label 0..9. */
mn_status mn_predict_u8(mn_model model, const uint8_t* pixels, size_t pixels_length, int32_t* out_label);
/* One image of pixels_length == 784 floats already scaled to [0,1] -> label 0..9. A NaN or infinite
 * pixel gives MN_ERR_BAD_INPUT (no label is written). */
mn_status mn_predict_f32(mn_model model, const float* pixels, size_t pixels_length, int32_t* out_label);
/* count images (count * 784 bytes back to back; images_length must equal that, also when count is 0)
 * -> labels[0..count).
 * labels_length must be >= count. Large batches use all cores. */
mn_status mn_predict_batch_u8(mn_model model, const uint8_t* images, size_t images_length, size_t count,
                              int32_t* labels, size_t labels_length);
/* One image -> softmax probabilities; probs_length must be >= 10 (10 values are written). */
mn_status mn_probabilities_u8(mn_model model, const uint8_t* pixels, size_t pixels_length,
                              float* probs, size_t probs_length);

#ifdef __cplusplus
}
#endif
#endif
