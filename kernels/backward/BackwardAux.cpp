//===- BackwardAux.cpp - The backward's entries beside its main kernel ----===//
//
//   <name>_pre  per query row: D = rowsum(dO * O) and LSE * log2(e) (+inf
//               for a row that saw no key, so that its P is 0), into the
//               workspace; the row's dQ partial sums (and dBias rows) set
//               to 0.
//   <name>_dq   dQ = scale * (the partial sums in order), rounded.
//
// Every family's backward module has them (the main kernels differ).
//
//===----------------------------------------------------------------------===//
#include "backward/BackwardEntry.h"

#include <limits>

using namespace mlir;

namespace flashjit {
namespace {

/// The aux entries' CTA: rows [x * kBackwardAuxRows, ...) of query head y
/// of batch z.
struct AuxCta {
  Value head, firstRow;
  Value seqQMax, seqKMax; ///< the arguments (the largest under varlen)
};
AuxCta locateAux(Entry &k) {
  OpBuilder &b = k.fk.builder;
  Location loc = k.fk.loc;
  Value x = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value y = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  k.fk.batch = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  Value seqQMax = k.fk.seqQ, seqKMax = k.e.toIndex(k.fk.seqKArg);
  k.fk.locateSequence();
  return {y, k.e.mul(x, k.e.idx(kBackwardAuxRows)), seqQMax, seqKMax};
}

void buildPreprocess(OpBuilder &builder, gpu::GPUModuleOp module,
                     const std::string &main, const AttentionSpec &spec,
                     const TileConfig &cfg) {
  Entry k(builder, module, backwardPreprocessEntry(main), spec, cfg,
          kBackwardAuxThreads);
  ForwardKernel &fk = k.fk;
  Emitter &e = k.e;
  AuxCta cta = locateAux(k);
  const int dqk = spec.headDimQK, dv = spec.headDimV;
  k.forEach(e, e.idx(kBackwardAuxRows), kBackwardAuxThreads,
            [&](Emitter &x, Value r) {
              Value i = x.add(cta.firstRow, r);
              x.ifThen(x.lt(i, fk.seqQ), [&] {
                Value oBase = k.queryRow(x, fk.oBS, fk.oHS, fk.oRS, cta.head, i);
                Value dOBase =
                    k.queryRow(x, k.a.dOBS, k.a.dOHS, k.a.dORS, cta.head, i);
                Value d = k.dot(x, fk.o, oBase, 1, k.a.dO, dOBase, 1, dv);
                Value row = k.wsRow(x, cta.head, i);
                k.store(x, d, k.a.ws, x.add(k.a.wsDSum, row));
                Value lseIdx =
                    x.add(x.add(x.mul(fk.batch, fk.lseBS),
                                x.mul(cta.head, fk.lseHS)),
                          x.add(fk.startQ, i));
                Value lse = k.loadF32(x, fk.lse, lseIdx);
                // The forward writes -inf for a row that saw no key: +inf
                // makes every P of it exp2(-inf) = 0.
                Value empty = x.feq(
                    lse, x.f32(-std::numeric_limits<float>::infinity()));
                Value lseLog2 =
                    x.select(empty, x.f32(std::numeric_limits<float>::infinity()),
                             x.fmul(lse, x.f32(kLog2e)));
                k.store(x, lseLog2, k.a.ws, x.add(k.a.wsLse, row));
              });
            });
  // The rows' dQ partial sums start at 0.
  e.runtimeLoop(e.idx(0), k.a.dqSplits, 1, [&](Emitter &x, Value split) {
    k.forEach(x, x.idx(kBackwardAuxRows * dqk), kBackwardAuxThreads,
              [&](Emitter &y, Value el) {
                Value i = y.add(cta.firstRow, y.div(el, dqk));
                y.ifThen(y.lt(i, fk.seqQ), [&] {
                  k.store(y, y.f32(0), k.a.ws,
                          k.dqIndex(y, split, cta.head, i, y.rem(el, dqk)));
                });
              });
  });
  // dBias starts at 0 everywhere (every row and key of the largest
  // sequence): the main kernel writes only the pairs its row blocks visit.
  if (spec.biasGrad)
    e.runtimeLoop(e.idx(0), e.idx(kBackwardAuxRows), 1, [&](Emitter &x, Value r) {
      Value i = x.add(cta.firstRow, r);
      x.ifThen(x.lt(i, cta.seqQMax), [&] {
        k.forEach(x, cta.seqKMax, kBackwardAuxThreads, [&](Emitter &y, Value j) {
          k.store(y, y.f32(0), k.a.dBias, k.dBiasIndex(y, cta.head, i, j));
        });
      });
    });
  k.finish();
}

void buildConvert(OpBuilder &builder, gpu::GPUModuleOp module,
                  const std::string &main, const AttentionSpec &spec,
                  const TileConfig &cfg) {
  Entry k(builder, module, backwardConvertEntry(main), spec, cfg,
          kBackwardAuxThreads);
  ForwardKernel &fk = k.fk;
  Emitter &e = k.e;
  AuxCta cta = locateAux(k);
  const int dqk = spec.headDimQK;
  k.forEach(e, e.idx(kBackwardAuxRows * dqk), kBackwardAuxThreads,
            [&](Emitter &x, Value el) {
              Value i = x.add(cta.firstRow, x.div(el, dqk));
              Value col = x.rem(el, dqk);
              x.ifThen(x.lt(i, fk.seqQ), [&] {
                // The partial sums in split order: the same bits every run.
                Value sum = x.runtimeLoop(
                    x.idx(0), k.a.dqSplits, 1, ValueRange{x.f32(0)},
                    [&](Emitter &y, Value split,
                        ValueRange acc) -> SmallVector<Value> {
                      Value part = k.loadF32(
                          y, k.a.ws, k.dqIndex(y, split, cta.head, i, col));
                      return {y.fadd(acc[0], part)};
                    })[0];
                Value at = x.add(
                    k.queryRow(x, k.a.dQBS, k.a.dQHS, k.a.dQRS, cta.head, i),
                    col);
                k.store(x, x.fmul(sum, k.a.scale), k.a.dQ, at);
              });
            });
  k.finish();
}

} // namespace

void buildBackwardModule(OpBuilder &builder, gpu::GPUModuleOp module,
                         StringRef name, const AttentionSpec &spec,
                         const TileConfig &cfg,
                         function_ref<void(const std::string &main)> buildMain) {
  OpBuilder::InsertionGuard guard(builder);
  const std::string main = name.str();
  buildPreprocess(builder, module, main, spec, cfg);
  buildMain(main);
  buildConvert(builder, module, main, spec, cfg);
}

} // namespace flashjit
