/* Stand-in for the TensorRT libraries that the real Python bindings (tensorrt-cu12-bindings, 10.x and 11.x)
 * link against: the nine C symbols that tensorrt_bindings/tensorrt.so leaves undefined
 * (`nm -D --undefined-only tensorrt.so`). Compiled three times by trt_standin.py, once per library, with
 * -DSTANDIN_NVINFER, -DSTANDIN_NVONNXPARSER or -DSTANDIN_NVINFER_PLUGIN and the real soname
 * (libnvinfer.so.N, libnvonnxparser.so.N, libnvinfer_plugin.so.N).
 *
 * Every factory returns NULL, which is what the real libnvinfer does when it cannot initialise CUDA (no GPU,
 * no driver): the bindings then raise "TypeError: pybind11::init(): factory function returned nullptr". The
 * C++ objects behind the bindings (builder, runtime, parser) are never made, so no method of theirs runs.
 */
#include <stddef.h>

#ifndef STANDIN_VERSION
#define STANDIN_VERSION 0
#endif

#ifdef STANDIN_NVINFER
void *createInferBuilder_INTERNAL(void *logger, int version) { (void)logger; (void)version; return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { (void)logger; (void)version; return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) {
    (void)engine; (void)logger; (void)version; return NULL;
}
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { (void)capability; return NULL; }
#endif

#ifdef STANDIN_NVONNXPARSER
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) {
    (void)network; (void)logger; (void)version; return NULL;
}
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) {
    (void)refitter; (void)logger; (void)version; return NULL;
}
int getNvOnnxParserVersion(void) { return STANDIN_VERSION; }
#endif

#ifdef STANDIN_NVINFER_PLUGIN
int initLibNvInferPlugins(void *logger, const char *plugin_namespace) { (void)logger; (void)plugin_namespace; return 0; }
#endif
