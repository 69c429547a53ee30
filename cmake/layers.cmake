# Layers (../shared/docs/architecture.md): a layer includes only its own headers and those of the
# layers to its left. The compiler enforces it: a library's include root is not src/ but a view
# in the build tree, build/layers/<layer>/, holding a link to each src/ folder that layer may
# use — so a wrong-way include is "No such file or directory" and fails the build.
#
#   format ──► kernels ──► recipe ──► model ──┬─► train
#      └──► io ─────────────────────────────────┴─► infer ──┬─► ptq
#                                                           └─► serve
#
# ptq sits right of infer: its calibration and sensitivity passes run the inference engine.
# serve (the HTTP server and its load generator) sits right of infer and never does numerics.
#
# The CLI, tests, benchmarks and fuzzers (right of every layer) include src/ whole
# (nvfp4_internal_headers).
set(NVFP4_LAYER_format  format)
set(NVFP4_LAYER_kernels format kernels)
set(NVFP4_LAYER_recipe  format recipe)
set(NVFP4_LAYER_model   format kernels recipe model)
set(NVFP4_LAYER_io      format io)
set(NVFP4_LAYER_train   format kernels recipe model io train)
set(NVFP4_LAYER_infer   format kernels recipe model io infer)
set(NVFP4_LAYER_ptq     format kernels recipe model io infer ptq)
set(NVFP4_LAYER_serve   format kernels recipe model io infer serve)

# The view of `layer` (created at configure time); its path in NVFP4_LAYER_VIEW_<layer>.
function(nvfp4_layer_view layer)
  if(NOT DEFINED NVFP4_LAYER_${layer})
    message(FATAL_ERROR "nvfp4_layer_view: unknown layer '${layer}'")
  endif()
  set(view "${PROJECT_BINARY_DIR}/layers/${layer}")
  file(REMOVE_RECURSE "${view}")
  file(MAKE_DIRECTORY "${view}")
  foreach(dir IN LISTS NVFP4_LAYER_${layer})
    file(CREATE_LINK "${PROJECT_SOURCE_DIR}/src/${dir}" "${view}/${dir}" SYMBOLIC)
  endforeach()
  set(NVFP4_LAYER_VIEW_${layer} "${view}" PARENT_SCOPE)
endfunction()
foreach(layer format kernels recipe model io train infer ptq serve)
  nvfp4_layer_view(${layer})
endforeach()

# A library of `layer`: the public API (include/) for everyone, its layer's view for itself.
function(nvfp4_layer target layer)
  target_include_directories(${target} PUBLIC "${PROJECT_SOURCE_DIR}/include" PRIVATE "${NVFP4_LAYER_VIEW_${layer}}")
endfunction()

add_library(nvfp4_internal_headers INTERFACE)
target_include_directories(nvfp4_internal_headers INTERFACE "${PROJECT_SOURCE_DIR}/include" "${PROJECT_SOURCE_DIR}/src")
