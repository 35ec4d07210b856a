//===- BackwardEntry.h - What the backward's entries share ------*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR): the backward's arguments as IR
// values and one entry's kernel (its ForwardKernel, arguments, thread index
// and the index arithmetic of the gradients and the workspace), shared by
// the preprocessing and conversion entries (BackwardAux.cpp) and every
// family's main kernels (sm80: scalar, BackwardSm80.cpp; mma.sync,
// BackwardMmaSm80.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_BACKWARD_BACKWARDENTRY_H
#define FLASHJIT_KERNELS_BACKWARD_BACKWARDENTRY_H

#include "common/ForwardKernel.h"

#include "flashjit/kernels/Backward.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace flashjit {

/// BackwardKernelArgs, after ForwardKernelArgs, as IR values.
struct BackwardArgs {
  Value dO, dQ, dK, dV, dBias, ws;
  Value dOBS, dOHS, dORS, dQBS, dQHS, dQRS, dKBS, dKHS, dKRS, dVBS, dVHS, dVRS;
  Value dBiasBS, dBiasHS, dBiasRS;
  Value wsRowBS, wsRowHS, wsLse, wsDSum, wsDq, wsDqSplit, wsDqRow;
  Value dqSplits; ///< index
  Value scale;    ///< f32

  explicit BackwardArgs(ForwardKernel &fk) {
    Emitter &e = fk.e;
    dO = fk.extraArg(0), dQ = fk.extraArg(1), dK = fk.extraArg(2);
    dV = fk.extraArg(3), dBias = fk.extraArg(4), ws = fk.extraArg(5);
    auto stride = [&](int i) {
      return e.toIndex(fk.extraArg(kBackwardPointerArgs + i));
    };
    dOBS = stride(0), dOHS = stride(1), dORS = stride(2);
    dQBS = stride(3), dQHS = stride(4), dQRS = stride(5);
    dKBS = stride(6), dKHS = stride(7), dKRS = stride(8);
    dVBS = stride(9), dVHS = stride(10), dVRS = stride(11);
    dBiasBS = stride(12), dBiasHS = stride(13), dBiasRS = stride(14);
    wsRowBS = stride(15), wsRowHS = stride(16), wsLse = stride(17);
    wsDSum = stride(18), wsDq = stride(19), wsDqSplit = stride(20);
    wsDqRow = stride(21);
    constexpr int kScalars = kBackwardPointerArgs + kBackwardStrideArgs;
    dqSplits = e.toIndex(fk.extraArg(kScalars));
    scale = fk.extraArg(kScalars + 1);
  }
};

inline SmallVector<Type> backwardArgTypes(OpBuilder &b, const AttentionSpec &spec) {
  Type elemTy = spec.dtype == DType::BF16 ? Type(b.getBF16Type())
                                          : Type(b.getF16Type());
  auto space = b.getI64IntegerAttr(kGlobalSpace);
  Type gmem = mlir::MemRefType::get({kGlobalExtent}, elemTy, mlir::AffineMap(), space);
  Type gmemF32 =
      mlir::MemRefType::get({kGlobalExtent}, b.getF32Type(), mlir::AffineMap(), space);
  SmallVector<Type> types(5, gmem); // dO, dQ, dK, dV, dBias
  types.push_back(gmemF32);         // workspace
  types.append(kBackwardStrideArgs, b.getI64Type());
  types.append({b.getI32Type(), b.getF32Type()});
  assert(types.size() == kBackwardArgCount);
  return types;
}

/// One backward entry: its ForwardKernel (arguments, sequence), the
/// backward's arguments and the thread index.
struct Entry {
  ForwardKernel fk;
  Emitter &e;
  BackwardArgs a;
  Value tid;

  Entry(OpBuilder &builder, mlir::gpu::GPUModuleOp module, StringRef name,
        const AttentionSpec &spec, const TileConfig &cfg, int threads)
      : fk(builder, module, name, spec, cfg, threads,
           backwardArgTypes(builder, spec)),
        e(fk.e), a(fk) {
    tid = mlir::gpu::ThreadIdOp::create(builder, fk.loc, mlir::gpu::Dimension::x);
  }

  /// An element of a global or shared memref, as f32.
  Value loadF32(Emitter &x, Value mem, Value i) {
    Value v = mlir::memref::LoadOp::create(x.b, x.loc, mem, ValueRange{i});
    if (v.getType() == fk.f32)
      return v;
    return mlir::arith::ExtFOp::create(x.b, x.loc, fk.f32, v);
  }
  void store(Emitter &x, Value v, Value mem, Value i) {
    Type elem = mlir::cast<mlir::MemRefType>(mem.getType()).getElementType();
    if (elem != v.getType())
      v = mlir::arith::TruncFOp::create(x.b, x.loc, elem, v);
    mlir::memref::StoreOp::create(x.b, x.loc, v, mem, ValueRange{i});
  }
  /// sum over c in [0, n) of a[aBase + c * aStep] * b[bBase + c * bStep]
  /// (f32, in order of c). A plain loop of constant trip count, which LLVM
  /// may unroll (the products' inner loops: unrolled they issue several
  /// loads per branch).
  Value dot(Emitter &x, Value aMem, Value aBase, int aStep, Value bMem,
            Value bBase, int bStep, int n) {
    auto loop = mlir::scf::ForOp::create(
        x.b, x.loc, x.idx(0), x.idx(n), x.idx(1), ValueRange{x.f32(0)},
        [&](OpBuilder &lb, Location l, Value c, ValueRange acc) {
          Emitter y{lb, l};
          Value av = loadF32(y, aMem, y.add(aBase, y.mul(c, y.idx(aStep))));
          Value bv = loadF32(y, bMem, y.add(bBase, y.mul(c, y.idx(bStep))));
          mlir::scf::YieldOp::create(lb, l, ValueRange{y.fma(av, bv, acc[0])});
        });
    return loop.getResult(0);
  }
  /// for (i = tid; i < count; i += threads) body(i).
  void forEach(Emitter &x, Value count, int threads,
               function_ref<void(Emitter &, Value)> body) {
    x.runtimeLoop(tid, count, threads, body);
  }
  /// The main kernels' CTA: K/V head and batch from the grid's y and z,
  /// the sequence located, the causal diagonal and score modifiers set.
  /// Returns the sequence's key rows, key padding included (dK and dV write
  /// all of them): seqK before key lengths shorten it.
  Value locateKeyTile(const AttentionSpec &spec) {
    OpBuilder &builder = fk.builder;
    Location loc = fk.loc;
    fk.kvHead = mlir::gpu::BlockIdOp::create(builder, loc,
                                             mlir::gpu::Dimension::y);
    fk.batch = mlir::gpu::BlockIdOp::create(builder, loc,
                                            mlir::gpu::Dimension::z);
    fk.locateSequence();
    Value keyRows = e.toIndex(fk.seqKArg);
    if (spec.varlen)
      keyRows = e.sub(e.toIndex(mlir::memref::LoadOp::create(
                          builder, loc, fk.cuSeqlensK,
                          ValueRange{e.add(fk.batch, e.idx(1))})),
                      fk.startK);
    fk.diag = e.sub(fk.seqK, fk.seqQ);
    return keyRows;
  }
  /// Workspace row of query `query` (of this sequence) of head `head`.
  Value wsRow(Emitter &x, Value head, Value query) {
    return x.add(x.add(x.mul(fk.batch, a.wsRowBS), x.mul(head, a.wsRowHS)),
                 x.add(fk.startQ, query));
  }
  /// Element offset of row `query` of head `head` of a query-shaped tensor.
  Value queryRow(Emitter &x, Value bs, Value hs, Value rs, Value head,
                 Value query) {
    return x.add(x.add(x.mul(fk.batch, bs), x.mul(head, hs)),
                 x.mul(x.add(fk.startQ, query), rs));
  }
  Value keyRow(Emitter &x, Value bs, Value hs, Value rs, Value head,
               Value key) {
    return x.add(x.add(x.mul(fk.batch, bs), x.mul(head, hs)),
                 x.mul(x.add(fk.startK, key), rs));
  }
  /// dQ partial sum `split`'s element (head, query, col).
  Value dqIndex(Emitter &x, Value split, Value head, Value query, Value col) {
    return x.add(x.add(a.wsDq, x.mul(split, a.wsDqSplit)),
                 x.add(x.mul(wsRow(x, head, query), a.wsDqRow), col));
  }
  /// dBias element (head, query, key): positions within the sequence, as
  /// the bias tensor's.
  Value dBiasIndex(Emitter &x, Value head, Value query, Value key) {
    return x.add(x.add(x.add(x.mul(fk.batch, a.dBiasBS),
                             x.mul(head, a.dBiasHS)),
                       x.mul(query, a.dBiasRS)),
                 key);
  }
  void finish() { mlir::gpu::ReturnOp::create(fk.builder, fk.loc); }
};

/// The entries every backward module has beside its main kernel <name>
/// (BackwardAux.cpp): <name>_pre (D = rowsum(dO * O), LSE * log2(e), the dQ
/// partial sums and dBias zeroed) and <name>_dq (dQ from the partial sums).
void buildBackwardPreprocess(OpBuilder &builder, mlir::gpu::GPUModuleOp module,
                             const std::string &main, const AttentionSpec &spec,
                             const TileConfig &cfg);
void buildBackwardConvert(OpBuilder &builder, mlir::gpu::GPUModuleOp module,
                          const std::string &main, const AttentionSpec &spec,
                          const TileConfig &cfg);

/// The main entry <name> with mma.sync products (TileConfig::scalar off).
void buildMainMma(OpBuilder &builder, mlir::gpu::GPUModuleOp module,
                  StringRef name, const AttentionSpec &spec,
                  const TileConfig &cfg);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_BACKWARD_BACKWARDENTRY_H
