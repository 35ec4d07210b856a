//===- BackwardSm80.cpp - The backward kernels for sm_80 and newer --------===//
//
// Builds the three entries of a backward spec (Backward.h) on the forward's
// shared pieces (ForwardKernel: arguments, sequence bounds, the masks' key
// ranges, score mods; Emitter): <name>_pre and <name>_dq (BackwardAux.cpp),
// and
//
//   <name>      per CTA block_n keys of one K/V head (K, V in shared
//               memory, dK and dV accumulated there in float32); for every
//               query head of the GQA group and every block of block_m
//               queries that sees the keys (queryBlockRange):
//                 S  = Q K^T, P = exp2(S' - LSE')     (S': the forward's
//                      log2-domain scores: scale, softcap, bias; masked -> 0)
//                 dP = dO V^T, dS = P * (dP - D)    (* 1 - tanh^2: softcap)
//                 (dBias = dS, when asked, before the softcap's factor)
//                 dV += P^T dO, dK += dS^T Q, dQ += dS K (float32 atomics
//                 into the workspace, or, deterministic, plain adds into
//                 this CTA's own partial sum)
//               then dK * scale and dV stored, rounded, key padding as 0.
//
// Correct before fast: every product is a float32 FMA loop over shared
// memory, each element of a product owned by one thread (the forward's
// mma.sync building blocks, Sm80Ops, are the next step).
//
//===----------------------------------------------------------------------===//
#include "backward/sm80/BackwardSm80.h"
#include "backward/BackwardEntry.h"
#include "common/ForwardKernel.h"

#include "flashjit/kernels/Backward.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <limits>

using namespace mlir;

namespace flashjit {
namespace {

void buildMainScalar(OpBuilder &builder, gpu::GPUModuleOp module, StringRef name,
               const AttentionSpec &spec, const TileConfig &cfg) {
  const BackwardLayout L = backwardLayoutSm80(spec, cfg);
  const int T = L.threads;
  Entry k(builder, module, name, spec, cfg, T);
  ForwardKernel &fk = k.fk;
  BackwardArgs &a = k.a;
  Emitter &e = k.e;
  Location loc = fk.loc;
  MLIRContext *ctx = builder.getContext();
  const int bm = cfg.blockM, bn = cfg.blockN;
  const int dqk = spec.headDimQK, dv = spec.headDimV;
  const int gqa = spec.gqaGroup;

  Value xBlock = gpu::BlockIdOp::create(builder, loc, gpu::Dimension::x);
  Value xCount = gpu::GridDimOp::create(builder, loc, gpu::Dimension::x);
  Value keyRows = k.locateKeyTile(spec);
  fk.prepareScoreMods(/*mTiles=*/0);
  // The deterministic mode's CTA x adds into partial sum x alone.
  Value split = spec.deterministic ? xBlock : e.idx(0);

  // ---- shared memory
  auto smemSpace = gpu::AddressSpaceAttr::get(
      ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
  auto dynSmem = gpu::DynamicSharedMemoryOp::create(
      builder, loc,
      MemRefType::get({ShapedType::kDynamic}, builder.getI8Type(), AffineMap(),
                      smemSpace));
  auto view = [&](Type elem, int64_t count, int offsetBytes) -> Value {
    auto type = MemRefType::get({count}, elem, AffineMap(), smemSpace);
    return memref::ViewOp::create(builder, loc, type, dynSmem,
                                  e.idx(offsetBytes), ValueRange{});
  };
  Type elemTy = fk.elemTy, f32 = fk.f32;
  Value kS = view(elemTy, bn * dqk, L.kOffset);
  Value vS = view(elemTy, bn * dv, L.vOffset);
  Value qS = view(elemTy, bm * dqk, L.qOffset);
  Value dOS = view(elemTy, bm * dv, L.dOOffset);
  Value dKS = view(f32, bn * dqk, L.dKOffset);
  Value dVS = view(f32, bn * dv, L.dVOffset);
  Value pS = view(f32, bm * bn, L.pOffset);
  Value dSS = view(f32, bm * bn, L.dSOffset);
  Value lseS = view(f32, bm, L.lseOffset);
  Value dSumS = view(f32, bm, L.dSumOffset);
  auto barrier = [&](Emitter &x) { gpu::BarrierOp::create(x.b, x.loc); };

  // Rows [first, first + rows) x `dim` columns of a global tensor into a
  // dense shared tile; rows at or past `limit` as 0.
  auto loadTile = [&](Emitter &x, Value src, function_ref<Value(Emitter &, Value)> rowBase,
                      Value first, Value limit, int rows, int dim, Value dst) {
    k.forEach(x, x.idx(rows * dim), T, [&](Emitter &y, Value el) {
      Value row = y.add(first, y.div(el, dim));
      Value col = y.rem(el, dim);
      auto ifOp = scf::IfOp::create(
          y.b, y.loc, y.lt(row, limit),
          [&](OpBuilder &tb, Location l) {
            Emitter t{tb, l};
            Value v = memref::LoadOp::create(
                tb, l, src, ValueRange{t.add(rowBase(t, row), col)});
            scf::YieldOp::create(tb, l, v);
          },
          [&](OpBuilder &eb, Location l) {
            Value zero = arith::ConstantOp::create(eb, l, eb.getZeroAttr(elemTy));
            scf::YieldOp::create(eb, l, zero);
          });
      memref::StoreOp::create(y.b, y.loc, ifOp.getResult(0), dst,
                              ValueRange{el});
    });
  };

  Value keyTiles =
      e.div(e.add(keyRows, e.idx(bn - 1)), bn);
  // CTA x takes key tiles x, x + gridDim.x, ... (one of them outside
  // deterministic mode, where the grid has a CTA per tile).
  scf::ForOp::create(
      builder, loc, xBlock, keyTiles, xCount, ValueRange{},
      [&](OpBuilder &nb, Location nl, Value nBlock, ValueRange) {
        Emitter x{nb, nl};
        Value keyLo = x.mul(nBlock, x.idx(bn));
        barrier(x); // the previous tile's accumulators are stored
        loadTile(x, fk.kT,
                 [&](Emitter &y, Value key) {
                   return k.keyRow(y, fk.kBS, fk.kHS, fk.kRS, fk.kvHead, key);
                 },
                 keyLo, fk.seqK, bn, dqk, kS);
        loadTile(x, fk.v,
                 [&](Emitter &y, Value key) {
                   return k.keyRow(y, fk.vBS, fk.vHS, fk.vRS, fk.kvHead, key);
                 },
                 keyLo, fk.seqK, bn, dv, vS);
        k.forEach(x, x.idx(bn * dqk), T, [&](Emitter &y, Value el) {
          memref::StoreOp::create(y.b, y.loc, y.f32(0), dKS, ValueRange{el});
        });
        k.forEach(x, x.idx(bn * dv), T, [&](Emitter &y, Value el) {
          memref::StoreOp::create(y.b, y.loc, y.f32(0), dVS, ValueRange{el});
        });
        auto blocks = fk.queryBlockRange(x, nBlock);
        Value loM = blocks.first, hiM = blocks.second;

        // Every query head of the K/V head's group, every row block that
        // sees the tile.
        x.runtimeLoop(x.idx(0), x.idx(gqa), 1, [&](Emitter &gx, Value g) {
          Value head = gx.add(gx.mul(fk.kvHead, gx.idx(gqa)), g);
          if (spec.bias == BiasMode::Alibi) {
            Value slope = memref::LoadOp::create(
                gx.b, gx.loc, fk.alibiSlopes,
                ValueRange{gx.add(gx.mul(fk.batch, fk.alibiBS), head)});
            fk.alibiLog2 = {{gx.fmul(slope, gx.f32(kLog2e))}};
          }
          gx.runtimeLoop(loM, hiM, 1, [&](Emitter &mx, Value mBlock) {
            Value qLo = mx.mul(mBlock, mx.idx(bm));
            barrier(mx); // the previous block's Q, dO, P and dS are used
            loadTile(mx, fk.q,
                     [&](Emitter &y, Value i) {
                       return k.queryRow(y, fk.qBS, fk.qHS, fk.qRS, head, i);
                     },
                     qLo, fk.seqQ, bm, dqk, qS);
            loadTile(mx, a.dO,
                     [&](Emitter &y, Value i) {
                       return k.queryRow(y, a.dOBS, a.dOHS, a.dORS, head, i);
                     },
                     qLo, fk.seqQ, bm, dv, dOS);
            k.forEach(mx, mx.idx(bm), T, [&](Emitter &y, Value r) {
              Value i = y.add(qLo, r);
              Value in = y.lt(i, fk.seqQ);
              Value row = k.wsRow(y, head, y.minS(i, y.sub(fk.seqQ, y.idx(1))));
              Value lse = k.loadF32(y, a.ws, y.add(a.wsLse, row));
              Value dSum = k.loadF32(y, a.ws, y.add(a.wsDSum, row));
              k.store(y,
                      y.select(in, lse,
                               y.f32(std::numeric_limits<float>::infinity())),
                      lseS, r);
              k.store(y, y.select(in, dSum, y.f32(0)), dSumS, r);
            });
            barrier(mx);

            // P and dS of every (row, key) of the step.
            k.forEach(mx, mx.idx(bm * bn), T, [&](Emitter &y, Value el) {
              Value r = y.div(el, bn), j = y.rem(el, bn);
              Value i = y.add(qLo, r), key = y.add(keyLo, j);
              Value s = k.dot(y, qS, y.mul(r, y.idx(dqk)), 1, kS,
                              y.mul(j, y.idx(dqk)), 1, dqk);
              // The forward's log2-domain score (scale, softcap, bias).
              Value tanh;
              Value sLog2 = fk.scoreToLog2(y, s, &tanh);
              if (spec.bias != BiasMode::None) {
                // addBias reads the row from mStart + warpRow0 + group and
                // the head from yBlock: one element per thread here.
                fk.mStart = i;
                fk.warpRow0 = y.idx(0);
                fk.group = y.idx(0);
                fk.yBlock = head;
                sLog2 = fk.addBias(y, sLog2, 0, 0, key);
              }
              // The masks: key j of query i is seen when j < seqK and
              // i + diag - left <= j <= i + diag (+ right).
              Value qDiag = y.add(i, fk.diag);
              Value seen = y.andI(y.lt(i, fk.seqQ), y.lt(key, fk.seqK));
              if (fk.causal)
                seen = y.andI(seen, y.le(key, qDiag));
              if (fk.window) {
                seen = y.andI(seen, y.le(key, y.add(qDiag, fk.windowRight)));
                seen = y.andI(seen, y.ge(key, y.sub(qDiag, fk.windowLeft)));
              }
              Value lse = k.loadF32(y, lseS, r);
              Value p = y.select(seen, y.exp2(y.fsub(sLog2, lse)), y.f32(0));
              Value dp = k.dot(y, dOS, y.mul(r, y.idx(dv)), 1, vS,
                               y.mul(j, y.idx(dv)), 1, dv);
              Value ds = y.fmul(p, y.fsub(dp, k.loadF32(y, dSumS, r)));
              // dBias = dS before the softcap's derivative (the bias is
              // added after the cap).
              if (spec.biasGrad)
                y.ifThen(seen, [&] {
                  k.store(y, ds, a.dBias, k.dBiasIndex(y, head, i, key));
                });
              if (spec.softcap) // d(cap * tanh(u)) / du = cap (1 - tanh^2)
                ds = y.fmul(ds, y.fsub(y.f32(1), y.fmul(tanh, tanh)));
              k.store(y, p, pS, el);
              k.store(y, ds, dSS, el);
            });
            barrier(mx);

            // dV += P^T dO, dK += dS^T Q (one thread per element).
            k.forEach(mx, mx.idx(bn * dv), T, [&](Emitter &y, Value el) {
              Value j = y.div(el, dv), c = y.rem(el, dv);
              Value sum = k.dot(y, pS, j, bn, dOS, c, dv, bm);
              k.store(y, y.fadd(k.loadF32(y, dVS, el), sum), dVS, el);
            });
            k.forEach(mx, mx.idx(bn * dqk), T, [&](Emitter &y, Value el) {
              Value j = y.div(el, dqk), c = y.rem(el, dqk);
              Value sum = k.dot(y, dSS, j, bn, qS, c, dqk, bm);
              k.store(y, y.fadd(k.loadF32(y, dKS, el), sum), dKS, el);
            });
            // dQ += dS K into the workspace.
            k.forEach(mx, mx.idx(bm * dqk), T, [&](Emitter &y, Value el) {
              Value r = y.div(el, dqk), c = y.rem(el, dqk);
              Value i = y.add(qLo, r);
              y.ifThen(y.lt(i, fk.seqQ), [&] {
                Value sum = k.dot(y, dSS, y.mul(r, y.idx(bn)), 1, kS, c, dqk,
                                  bn);
                Value at = k.dqIndex(y, split, head, i, c);
                if (spec.deterministic) {
                  k.store(y, y.fadd(k.loadF32(y, a.ws, at), sum), a.ws, at);
                } else {
                  memref::AtomicRMWOp::create(y.b, y.loc,
                                              arith::AtomicRMWKind::addf, sum,
                                              a.ws, ValueRange{at});
                }
              });
            });
          });
        });
        barrier(x);
        // dK (times the scale) and dV of the tile's rows; key padding (rows
        // past key lengths) saw no query and stores 0.
        k.forEach(x, x.idx(bn * dqk), T, [&](Emitter &y, Value el) {
          Value key = y.add(keyLo, y.div(el, dqk));
          y.ifThen(y.lt(key, keyRows), [&] {
            Value at = y.add(
                k.keyRow(y, a.dKBS, a.dKHS, a.dKRS, fk.kvHead, key),
                y.rem(el, dqk));
            k.store(y, y.fmul(k.loadF32(y, dKS, el), a.scale), a.dK, at);
          });
        });
        k.forEach(x, x.idx(bn * dv), T, [&](Emitter &y, Value el) {
          Value key = y.add(keyLo, y.div(el, dv));
          y.ifThen(y.lt(key, keyRows), [&] {
            Value at = y.add(
                k.keyRow(y, a.dVBS, a.dVHS, a.dVRS, fk.kvHead, key),
                y.rem(el, dv));
            k.store(y, k.loadF32(y, dVS, el), a.dV, at);
          });
        });
        scf::YieldOp::create(nb, nl);
      });
  k.finish();
}

} // namespace

LogicalResult buildBackwardSm80(OpBuilder &builder, gpu::GPUModuleOp module,
                                StringRef name, const AttentionSpec &spec,
                                const TileConfig &cfg) {
  buildBackwardModule(builder, module, name, spec, cfg,
                      [&](const std::string &main) {
                        if (cfg.scalar)
                          buildMainScalar(builder, module, main, spec, cfg);
                        else
                          buildMainMma(builder, module, main, spec, cfg);
                      });
  return success();
}

} // namespace flashjit
