// TensorFlow registration of the spike_matmul ops: output = spikes @ weights
// for binary spikes (FusedLif>SpikeMatmul), its weight gradient
// (FusedLif>SpikeMatmulWeightGrad) and the density probe of
// LIFLayer(spike_input="auto") (FusedLif>SpikeDensity): op schemas, shape
// functions, input checks and the CPU kernels, whose loops are
// spike_matmul.h's. CPU kernels only: on a GPU TensorFlow places these ops on
// the CPU.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "op_helpers.h"
#include "spike_matmul.h"

namespace fused_lif {
namespace {

REGISTER_OP("FusedLif>SpikeMatmul")
    .Input("spikes: T")    // [M, K], every value 0 or 1
    .Input("weights: T")   // [K, N]
    .Output("output: T")   // [M, N]
    .Output("row_ptr: int64")  // [M + 1]: row m's ones are cols[row_ptr[m] .. row_ptr[m + 1])
    .Output("cols: int32")     // [nnz]: their columns, ascending per row
    .Attr("T: {float, half, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle spikes, weights;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &spikes));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &weights));
      DimensionHandle unused, rows_plus_one;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(spikes, 1), c->Dim(weights, 0), &unused));
      TF_RETURN_IF_ERROR(c->Add(c->Dim(spikes, 0), 1, &rows_plus_one));
      c->set_output(0, c->Matrix(c->Dim(spikes, 0), c->Dim(weights, 1)));
      c->set_output(1, c->Vector(rows_plus_one));
      c->set_output(2, c->Vector(c->UnknownDim()));
      return Status();
    })
    .Doc("spikes @ weights for binary spikes, as sums of weights' rows; see csrc/spike_matmul.h.");

REGISTER_OP("FusedLif>SpikeMatmulWeightGrad")
    .Input("grad_output: T")  // [M, N]
    .Input("row_ptr: int64")  // [M + 1], from FusedLif>SpikeMatmul
    .Input("cols: int32")     // [nnz], from FusedLif>SpikeMatmul
    .Input("weights: T")      // [K, N]: only its shape is used
    .Output("grad_weights: T")  // [K, N] = spikesᵀ @ grad_output
    .Attr("T: {float, half, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle grad, weights, unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &grad));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &weights));
      DimensionHandle n;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(grad, 1), c->Dim(weights, 1), &n));
      c->set_output(0, c->Matrix(c->Dim(weights, 0), n));
      return Status();
    })
    .Doc("The weight gradient of FusedLif>SpikeMatmul from its saved row lists.");

REGISTER_OP("FusedLif>SpikeDensity")
    .Input("spikes: T")        // any shape
    .Output("density: float")  // []: the fraction of nonzero values
    .Output("binary: bool")    // []: whether every value is 0 or 1
    .Attr("T: {float, half, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return Status();
    })
    .Doc("One pass over spikes: its density and whether it is binary (spike_input='auto').");

// Rows of the spikes per work item of the index passes (count, fill).
constexpr int64_t kSpikeIndexRows = 64;

// A pass of `items` work items of about `per_item` elements each (values
// read, or multiply-adds), sharded by op_helpers.h's ShardWork at about a
// cycle per element.
template <typename Fn>
void ShardSpikeWork(OpKernelContext* ctx, int64_t items, int64_t per_item, Fn fn) {
  ShardWork(ctx, items * per_item, items, per_item, fn);
}

// Counts the ones of each row of x [rows, K] into counts [rows] (in
// parallel); returns InvalidArgument naming the first value other than 0 or 1.
template <typename T>
Status CountSpikeRows(OpKernelContext* ctx, const T* x, int64_t rows, int64_t K, int64_t* counts,
                      const char* name) {
  std::atomic<int64_t> first_bad{rows};
  ShardSpikeWork(ctx, ceil_div(rows, kSpikeIndexRows), kSpikeIndexRows * K,
                 [&](int64_t b, int64_t e) {
    const int64_t bad = spike_count_rows_cpu<T>(x, K, b * kSpikeIndexRows,
                                                std::min(rows, e * kSpikeIndexRows), counts);
    if (bad < 0) return;
    int64_t seen = first_bad.load();
    while (bad < seen && !first_bad.compare_exchange_weak(seen, bad)) {
    }
  });
  const int64_t row = first_bad.load();
  if (row == rows) return Status();
  const int64_t col = spike_first_bad_column(x, K, row);
  return InvalidArgument(name, " must be binary (every value 0 or 1), got ",
                         static_cast<float>(x[row * K + col]), " at [", row, ", ", col,
                         "]; use the dense matmul (tf.matmul, or LIFLayer(spike_input=False)) "
                         "for other inputs");
}

template <typename T>
class SpikeMatmulOp : public OpKernel {
 public:
  explicit SpikeMatmulOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& spikes = ctx->input(0);
    const Tensor& weights = ctx->input(1);
    OP_REQUIRES(ctx, spikes.dims() == 2,
                InvalidArgument("spikes must have rank 2 [rows, inputs], got shape ",
                                ShapeString(spikes)));
    OP_REQUIRES(ctx, weights.dims() == 2,
                InvalidArgument("weights must have rank 2 [inputs, outputs], got shape ",
                                ShapeString(weights)));
    OP_REQUIRES(ctx, spikes.dim_size(1) == weights.dim_size(0),
                InvalidArgument("spikes [rows, inputs] and weights [inputs, outputs] must agree "
                                "on inputs, got spikes ", ShapeString(spikes), " and weights ",
                                ShapeString(weights)));
    SpikeMatmulArgs a;
    a.rows = spikes.dim_size(0);
    a.inputs = spikes.dim_size(1);
    a.outputs = weights.dim_size(1);
    // Column and (in the weight gradient) row indices are int32.
    OP_REQUIRES(ctx, a.inputs <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("spikes may have at most 2^31 - 1 inputs (columns), got ",
                                a.inputs));
    OP_REQUIRES(ctx, a.rows <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("spikes may have at most 2^31 - 1 rows, got ", a.rows));
    Tensor *output, *row_ptr, *cols;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({a.rows, a.outputs}), &output));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({a.rows + 1}), &row_ptr));
    int64_t* ptr = row_ptr->flat<int64_t>().data();
    ptr[0] = 0;
    const T* x = spikes.flat<T>().data();
    OP_REQUIRES_OK(ctx, CountSpikeRows(ctx, x, a.rows, a.inputs, ptr + 1, "spikes"));
    for (int64_t m = 0; m < a.rows; ++m) ptr[m + 1] += ptr[m];
    const int64_t nnz = ptr[a.rows];
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({nnz}), &cols));
    a.row_ptr = ptr;
    a.cols = cols->flat<int32_t>().data();
    a.output = output->flat<T>().data();
    int32_t* cols_out = cols->flat<int32_t>().data();
    ShardSpikeWork(ctx, ceil_div(a.rows, kSpikeIndexRows), kSpikeIndexRows * a.inputs,
                   [&](int64_t b, int64_t e) {
                     spike_fill_cols_cpu<T>(x, a.inputs, ptr, b * kSpikeIndexRows,
                                            std::min(a.rows, e * kSpikeIndexRows), cols_out);
                   });
    if (a.outputs == 0) return;
    Tensor packed;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({a.inputs * a.outputs}), &packed));
    const T* w = weights.flat<T>().data();
    float* packed_weights = packed.flat<float>().data();
    ShardSpikeWork(ctx, a.inputs, a.outputs, [&](int64_t b, int64_t e) {
      spike_pack_cpu<T>(w, a.inputs, a.outputs, b, e, packed_weights);
    });
    a.packed_weights = packed_weights;
    // Cost of an item: its rows' ones times the tile's width.
    const int64_t per_item =
        std::max<int64_t>(1, nnz / std::max<int64_t>(1, spike_row_blocks(a.rows))) *
        std::min(a.outputs, kSpikeColumnTile);
    ShardSpikeWork(ctx, spike_forward_items(a), per_item,
                   [&a](int64_t b, int64_t e) { spike_matmul_forward_cpu<T>(a, b, e); });
  }
};

template <typename T>
class SpikeMatmulWeightGradOp : public OpKernel {
 public:
  explicit SpikeMatmulWeightGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& row_ptr = ctx->input(1);
    const Tensor& cols = ctx->input(2);
    const Tensor& weights = ctx->input(3);
    OP_REQUIRES(ctx, weights.dims() == 2,
                InvalidArgument("weights must have rank 2 [inputs, outputs], got shape ",
                                ShapeString(weights)));
    OP_REQUIRES(ctx, grad.dims() == 2 && grad.dim_size(1) == weights.dim_size(1),
                InvalidArgument("grad_output must have shape [rows, ", weights.dim_size(1),
                                "], got shape ", ShapeString(grad)));
    SpikeMatmulArgs a;
    a.rows = grad.dim_size(0);
    a.inputs = weights.dim_size(0);
    a.outputs = weights.dim_size(1);
    OP_REQUIRES(ctx, a.rows <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("grad_output may have at most 2^31 - 1 rows, got ", a.rows));
    OP_REQUIRES(ctx, row_ptr.dims() == 1 && row_ptr.dim_size(0) == a.rows + 1,
                InvalidArgument("row_ptr must have shape [rows + 1] = [", a.rows + 1,
                                "], got shape ", ShapeString(row_ptr)));
    OP_REQUIRES(ctx, cols.dims() == 1,
                InvalidArgument("cols must have rank 1, got shape ", ShapeString(cols)));
    const int64_t* ptr = row_ptr.flat<int64_t>().data();
    const int32_t* col = cols.flat<int32_t>().data();
    const int64_t nnz = cols.dim_size(0);
    // The row lists come from FusedLif>SpikeMatmul; checked all the same
    // (O(rows + nnz)), since a bad index would write out of bounds.
    bool ok = ptr[0] == 0 && ptr[a.rows] == nnz;
    for (int64_t m = 0; ok && m < a.rows; ++m) ok = ptr[m] <= ptr[m + 1];
    for (int64_t p = 0; ok && p < nnz; ++p) ok = col[p] >= 0 && col[p] < a.inputs;
    OP_REQUIRES(ctx, ok,
                InvalidArgument("row_ptr and cols are not the row lists of a [", a.rows, ", ",
                                a.inputs, "] spike matrix (pass the outputs of "
                                "FusedLif>SpikeMatmul)"));
    Tensor* grad_weights;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, weights.shape(), &grad_weights));
    const int64_t KN = a.inputs * a.outputs;
    if (KN == 0) return;
    const int64_t blocks = spike_row_blocks(a.rows);
    Tensor packed, grad_float, block_ptr, block_rows;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({KN}), &packed));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT64,
                                           TensorShape({blocks * a.inputs + 1}), &block_ptr));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT32, TensorShape({nnz}), &block_rows));
    if (std::is_same<T, float>::value) {
      a.grad_output = reinterpret_cast<const float*>(grad.flat<T>().data());
    } else {  // summed in float: dOut converted once
      const int64_t MN = a.rows * a.outputs;
      OP_REQUIRES_OK(ctx,
                     ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({MN}), &grad_float));
      const T* src = grad.flat<T>().data();
      float* dst = grad_float.flat<float>().data();
      constexpr int64_t kChunk = 1 << 14;
      ShardSpikeWork(ctx, ceil_div(MN, kChunk), kChunk, [&](int64_t b, int64_t e) {
        spike_to_float_cpu<T>(src, b * kChunk, std::min(MN, e * kChunk), dst);
      });
      a.grad_output = dst;
    }
    a.row_ptr = ptr;
    a.cols = col;
    a.packed_grad_weights = packed.flat<float>().data();
    a.block_ptr = block_ptr.flat<int64_t>().data();
    a.block_rows = block_rows.flat<int32_t>().data();
    const int64_t per_block = std::max<int64_t>(1, nnz / std::max<int64_t>(1, blocks)) + a.inputs;
    ShardSpikeWork(ctx, blocks, per_block,
                   [&a](int64_t b, int64_t e) { spike_weight_grad_count_cpu(a, b, e); });
    spike_weight_grad_prefix(a);
    ShardSpikeWork(ctx, blocks, per_block,
                   [&a](int64_t b, int64_t e) { spike_weight_grad_fill_cpu(a, b, e); });
    const int64_t threads = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
    const int64_t items = spike_weight_grad_items(a, threads);
    const int64_t per_item = std::max<int64_t>(1, nnz * std::min(a.outputs, kSpikeColumnTile) /
                                                      spike_weight_grad_chunks(a, threads));
    ShardSpikeWork(ctx, items, per_item, [&a, threads](int64_t b, int64_t e) {
      spike_weight_grad_cpu(a, threads, b, e);
    });
    T* out = grad_weights->flat<T>().data();
    ShardSpikeWork(ctx, a.inputs, a.outputs, [&](int64_t b, int64_t e) {
      spike_unpack_cpu<T>(a.packed_grad_weights, a.inputs, a.outputs, b, e, out);
    });
  }
};

template <typename T>
class SpikeDensityOp : public OpKernel {
 public:
  explicit SpikeDensityOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& spikes = ctx->input(0);
    const int64_t size = spikes.NumElements();
    const int64_t K = spikes.dims() > 0 ? spikes.dim_size(spikes.dims() - 1) : 1;
    const int64_t rows = K > 0 ? size / K : 0;
    Tensor *density, *binary, counts;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &density));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &binary));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT64, TensorShape({rows}), &counts));
    int64_t* c = counts.flat<int64_t>().data();
    const Status status = CountSpikeRows(ctx, spikes.flat<T>().data(), rows, K, c, "spikes");
    int64_t ones = 0;
    for (int64_t m = 0; m < rows; ++m) ones += c[m];
    binary->scalar<bool>()() = status.ok();
    density->scalar<float>()() =
        size == 0 ? 0.0f : static_cast<float>(static_cast<double>(ones) / size);
  }
};

#define REGISTER_SPIKE_KERNELS(T)                                                            \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("FusedLif>SpikeMatmul").Device(DEVICE_CPU).TypeConstraint<T>("T"),                \
      SpikeMatmulOp<T>);                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("FusedLif>SpikeMatmulWeightGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),      \
      SpikeMatmulWeightGradOp<T>);                                                           \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("FusedLif>SpikeDensity").Device(DEVICE_CPU).TypeConstraint<T>("T"),               \
      SpikeDensityOp<T>);

REGISTER_SPIKE_KERNELS(float)
REGISTER_SPIKE_KERNELS(Eigen::half)
REGISTER_SPIKE_KERNELS(Eigen::bfloat16)

}  // namespace
}  // namespace fused_lif
