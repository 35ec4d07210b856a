//===- ForwardKernel.cpp - What every forward family's kernel shares -----===//
#include "common/ForwardKernel.h"
#include "common/Sm80Ops.h"

#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/Forward.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <limits>

using namespace mlir;

namespace flashjit {

namespace {
/// K and V bytes of the heads whose causal CTAs run together
/// (ctaCoordinates): a third of an H100's 50 MB L2.
constexpr int64_t kLptChunkBytes = int64_t(16) << 20;
/// Score tiles of a 16-key slice (one k-step of P V).
constexpr int kSliceTilesOf16 = 2;
} // namespace

SmallVector<Value> flatten(const Scores &tiles) {
  SmallVector<Value> flat;
  for (const auto &row : tiles)
    for (const AccTile &t : row)
      flat.append(t.begin(), t.end());
  return flat;
}

Scores unflatten(ValueRange flat, int mTiles, int nTiles) {
  Scores tiles(mTiles);
  for (int mt = 0; mt < mTiles; ++mt)
    for (int nt = 0; nt < nTiles; ++nt)
      tiles[mt].push_back(tileAt(flat, mt * nTiles + nt));
  return tiles;
}

SmallVector<Value> rowScores(ArrayRef<AccTile> tiles, int half) {
  SmallVector<Value> scores;
  for (const AccTile &t : tiles)
    for (int el = 0; el < 2; ++el)
      scores.push_back(t[2 * half + el]);
  return scores;
}

// ---- signature and arguments ------------------------------------------------
ForwardKernel::ForwardKernel(OpBuilder &builder, gpu::GPUModuleOp module,
                             StringRef name, const AttentionSpec &spec,
                             const TileConfig &cfg, int threads,
                             ArrayRef<Type> extraArgs)
    : builder(builder), loc(module.getLoc()), e{builder, module.getLoc()},
      spec(spec), cfg(cfg), causal(spec.mask == MaskMode::Causal),
      window(spec.mask == MaskMode::Window), packed(cfg.packGqa),
      gqa(spec.gqaGroup), decodeArgs(spec.pagedKV || spec.splitKV) {
  builder.setInsertionPointToEnd(module.getBody());
  elemTy = spec.dtype == DType::BF16 ? Type(builder.getBF16Type())
                                     : Type(builder.getF16Type());
  f32 = builder.getF32Type();
  Type i64 = builder.getI64Type();
  Type i32 = builder.getI32Type();
  auto globalSpace = builder.getI64IntegerAttr(kGlobalSpace);
  auto gmem =
      MemRefType::get({kGlobalExtent}, elemTy, AffineMap(), globalSpace);
  auto gmemF32 =
      MemRefType::get({kGlobalExtent}, f32, AffineMap(), globalSpace);
  auto gmemI32 =
      MemRefType::get({kGlobalExtent}, i32, AffineMap(), globalSpace);

  SmallVector<Type> argTypes = {gmem, gmem,    gmem,    gmem,    gmemF32,
                                gmem, gmemF32, gmemI32, gmemI32, gmemI32};
  argTypes.append(kForwardKernelStrideArgs, i64);
  argTypes.append({i32, i32, i32, i32, f32, f32});
  assert(argTypes.size() == kForwardKernelArgCount);
  if (decodeArgs) { // DecodeKernelArgs
    argTypes.append({gmemI32, gmemF32, gmemF32, i64, i64});
    argTypes.append(6, i32);
    assert(argTypes.size() == kForwardKernelArgCount + kDecodeKernelArgCount);
  }
  argTypes.append(extraArgs.begin(), extraArgs.end());
  func = gpu::GPUFuncOp::create(builder, loc, name,
                                builder.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                builder.getUnitAttr());
  // The GPU-to-NVVM conversion turns this into .maxntid (setting
  // nvvm.maxntid here as well duplicated the attribute in the nvvm stage,
  // which then did not parse).
  func.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr({threads, 1, 1}));
  // One CTA per SM is enough: without this ptxas caps registers to fit two
  // and spills (seen at d=16/64 with 256 threads); and setmaxnreg needs the
  // count at entry that it gives.
  func->setAttr("nvvm.minctasm", builder.getI32IntegerAttr(1));

  Block &entry = func.getBody().front();
  builder.setInsertionPointToStart(&entry);
  auto arg = [&](int i) { return entry.getArgument(i); };
  q = arg(0), kT = arg(1), v = arg(2), o = arg(3), lse = arg(4);
  bias = arg(5), alibiSlopes = arg(6);
  cuSeqlensQ = arg(7), cuSeqlensK = arg(8), keyLengths = arg(9);
  auto stride = [&](int i) {
    return e.toIndex(arg(kForwardKernelPointerArgs + i));
  };
  qBS = stride(0), qHS = stride(1), qRS = stride(2);
  kBS = stride(3), kHS = stride(4), kRS = stride(5);
  vBS = stride(6), vHS = stride(7), vRS = stride(8);
  oBS = stride(9), oHS = stride(10), oRS = stride(11);
  lseBS = stride(12), lseHS = stride(13);
  biasBS = stride(14), biasHS = stride(15), biasRS = stride(16);
  alibiBS = stride(17);
  constexpr int kScalars = kForwardKernelPointerArgs + kForwardKernelStrideArgs;
  seqKArg = arg(kScalars + 1);
  seqQ = e.toIndex(arg(kScalars)), seqK = e.toIndex(seqKArg);
  windowLeft = e.toIndex(arg(kScalars + 2));
  windowRight = e.toIndex(arg(kScalars + 3));
  scaleLog2 = arg(kScalars + 4), softcap = arg(kScalars + 5);
  if (decodeArgs) {
    const int d = kForwardKernelArgCount;
    blockTable = arg(d), partialO = arg(d + 1), partialLse = arg(d + 2);
    blockTableStride = e.toIndex(arg(d + 3));
    partialEntries = e.toIndex(arg(d + 4));
    pageSize = arg(d + 5), pageDivMul = arg(d + 6), pageDivShift = arg(d + 7);
    numSplits = arg(d + 8), headsQArg = arg(d + 9), newKeys = arg(d + 10);
    seqQArg = seqQ;
  }
}

Value ForwardKernel::extraArg(int i) {
  return func.getBody().front().getArgument(
      kForwardKernelArgCount + (decodeArgs ? kDecodeKernelArgCount : 0) + i);
}

// ---- CTA order
// ----------------------------------------------------------------- A causal
// block's work grows with its row block, and the hardware starts CTAs in the
// order of their linear index: with blockIdx.x as the row block, every head's
// heaviest blocks start last and the final wave runs them alone. Causal CTAs
// are therefore handed out longest first: within a chunk of heads of one batch,
// row blocks from the last down, the chunk's heads fastest. A chunk is a power
// of two heads whose K and V fit kLptChunkBytes (they stay in L2 while its CTAs
// stream them); the last chunk of a batch also takes the remainder. This costs
// one division (at the start, and again before a staged epilogue: cheap next to
// even one K/V tile).
std::array<Value, 3> ForwardKernel::ctaCoordinates(bool fresh) {
  if (!fresh && !causal)
    return {gpu::BlockIdOp::create(builder, loc, gpu::Dimension::x),
            gpu::BlockIdOp::create(builder, loc, gpu::Dimension::y),
            gpu::BlockIdOp::create(builder, loc, gpu::Dimension::z)};
  Value x = e.freshSreg("%ctaid.x");
  Value y = e.freshSreg("%ctaid.y");
  Value z = e.freshSreg("%ctaid.z");
  if (!causal)
    return {x, y, z};
  Value rowBlocks = e.freshSreg("%nctaid.x");
  Value heads = e.freshSreg("%nctaid.y");
  // log2(heads a chunk) = floor(log2(budget keys)) - ceil(log2(seqlen_k)),
  // at least 0; ceil(log2(n)) = 32 - clz(n - 1).
  const int64_t kvBytesPerKey =
      int64_t(spec.headDimQK + spec.headDimV) * elementBytes(spec.dtype);
  const int64_t budgetLog2 = llvm::Log2_64(kLptChunkBytes / kvBytesPerKey);
  Value keysM1 = e.sub(e.maxS(seqKArg, e.i32(1)), e.i32(1));
  Value keysLog2 = e.sub(e.idx(32), e.toIndex(LLVM::CountLeadingZerosOp::create(
                                        builder, loc, keysM1,
                                        /*is_zero_poison=*/false)));
  Value chunkLog2 = e.maxS(e.sub(e.idx(budgetLog2), keysLog2), e.idx(0));
  Value lastChunk = e.sub(e.maxS(e.shrU(heads, chunkLog2), e.idx(1)), e.idx(1));
  Value chunk = e.minS(e.shrU(y, chunkLog2), lastChunk);
  Value firstHead = e.shl(chunk, chunkLog2);
  Value chunkHeads =
      e.select(e.cmp(arith::CmpIPredicate::eq, chunk, lastChunk),
               e.sub(heads, firstHead), e.shl(e.idx(1), chunkLog2));
  Value within = e.add(e.mul(e.sub(y, firstHead), rowBlocks), x);
  // A 32-bit division: ptxas expands a 64-bit one into a subroutine that
  // cost 9% of the d=128 kernel's compile. The runtime keeps every
  // launch's grid below 2^32 CTAs, which bounds `within`.
  auto toI32 = [&](Value v) {
    return arith::IndexCastUIOp::create(builder, loc, builder.getI32Type(), v);
  };
  Value fromLast = arith::IndexCastUIOp::create(
      builder, loc, builder.getIndexType(),
      arith::DivUIOp::create(builder, loc, toI32(within), toI32(chunkHeads)));
  Value head = e.add(firstHead, e.sub(within, e.mul(fromLast, chunkHeads)));
  return {e.sub(e.sub(rowBlocks, e.idx(1)), fromLast), head, z};
}

// ---- this CTA's rows
// ---------------------------------------------------------
void ForwardKernel::locateRows() {
  auto [mBlockV, yBlockV, batchV] = ctaCoordinates(/*fresh=*/false);
  mBlock = mBlockV, yBlock = yBlockV, batch = batchV;
  if (spec.splitKV) {
    // z = batch x numSplits + split, divided in 32 bits (the grid's z is
    // below 2^16).
    Type i32 = builder.getI32Type();
    Value z = arith::IndexCastUIOp::create(builder, loc, i32, batchV);
    Value b = arith::DivUIOp::create(builder, loc, z, numSplits);
    batch = arith::IndexCastUIOp::create(builder, loc, builder.getIndexType(),
                                         b);
    split = e.sub(batchV, e.mul(batch, e.toIndex(numSplits)));
  }
  kvHead = packed ? yBlock : e.div(yBlock, gqa);
  locateSequence();

  rowLimit = packed ? e.mul(seqQ, e.idx(gqa)) : seqQ;
  qSeqBase = e.add(e.mul(batch, qBS), e.mul(startQ, qRS));
  oSeqBase = e.add(e.mul(batch, oBS), e.mul(startQ, oRS));
  if (spec.pagedKV) {
    // Rows are addressed per key (pagedRow); batch strides are page
    // strides.
    kBase = e.mul(kvHead, kHS);
    vBase = e.mul(kvHead, vHS);
    blockTableRow = e.mul(batch, blockTableStride);
  } else {
    kBase = e.add(e.add(e.mul(batch, kBS), e.mul(startK, kRS)),
                  e.mul(kvHead, kHS));
    vBase = e.add(e.add(e.mul(batch, vBS), e.mul(startK, vRS)),
                  e.mul(kvHead, vHS));
  }
  mStart = e.mul(mBlock, e.idx(cfg.blockM));
}

void ForwardKernel::locateSequence() {
  // This sequence: where its rows start and how many there are.
  startQ = e.idx(0), startK = e.idx(0);
  auto loadIndex = [&](Value mem, Value i) {
    return e.toIndex(memref::LoadOp::create(builder, loc, mem, ValueRange{i}));
  };
  if (spec.varlen) {
    Value next = e.add(batch, e.idx(1));
    startQ = loadIndex(cuSeqlensQ, batch);
    seqQ = e.sub(loadIndex(cuSeqlensQ, next), startQ);
    if (!spec.pagedKV) { // a paged cache's keys come from its block table
      startK = loadIndex(cuSeqlensK, batch);
      seqK = e.sub(loadIndex(cuSeqlensK, next), startK);
    }
  }
  if (spec.keyLengths)
    seqK = loadIndex(keyLengths, batch);
  if (spec.keyLengths && decodeArgs) // keys appended before the launch
    seqK = e.add(seqK, e.toIndex(newKeys));
}

Value pageOfKey(Emitter &x, Value key, Value mul, Value shift) {
  Type i32 = x.b.getI32Type(), i64 = x.b.getI64Type();
  auto wide = [&](Value v32) {
    return arith::ExtUIOp::create(x.b, x.loc, i64, v32).getResult();
  };
  Value key64 = wide(arith::IndexCastUIOp::create(x.b, x.loc, i32, key));
  Value mul64 = wide(mul), shift64 = wide(shift);
  Value page64 = arith::ShRUIOp::create(
      x.b, x.loc, arith::MulIOp::create(x.b, x.loc, key64, mul64), shift64);
  return arith::IndexCastUIOp::create(x.b, x.loc, x.b.getIndexType(), page64);
}

ForwardKernel::PagedRow ForwardKernel::pagedRow(Emitter &x, Value key) {
  Value k = x.maxS(x.minS(key, x.sub(seqK, x.idx(1))), x.idx(0));
  Value page = pageOfKey(x, k, pageDivMul, pageDivShift);
  Value slot = x.sub(k, x.mul(page, x.toIndex(pageSize)));
  Value id = memref::LoadOp::create(x.b, x.loc, blockTable,
                                    ValueRange{x.add(blockTableRow, page)});
  return {x.toIndex(id), slot};
}

Value ForwardKernel::pagedOffset(Emitter &x, const PagedRow &row,
                                 Value pageStride, Value rowStride) {
  return x.add(x.mul(row.page, pageStride), x.mul(row.slot, rowStride));
}

Value ForwardKernel::queryOf(Emitter &x, Value row) {
  return packed ? x.div(row, gqa) : row;
}
Value ForwardKernel::headOf(Emitter &x, Value row) {
  return packed ? x.add(x.mul(kvHead, x.idx(gqa)), x.rem(row, gqa)) : yBlock;
}
Value ForwardKernel::qRowOffset(Emitter &x, Value row) {
  return x.add(x.mul(queryOf(x, row), qRS), x.mul(headOf(x, row), qHS));
}

// ---- K/V block range
// --------------------------------------------------------- Masks are
// bottom-right aligned: query i sees keys up to i + diag (causal), or [i + diag
// - window_left, i + diag + window_right].
void ForwardKernel::blockRange() {
  diag = e.sub(seqK, seqQ);
  active = e.lt(mStart, rowLimit); // false past this sequence's rows
  Value firstQuery = firstQueryOf(e), lastQuery = lastQueryOf(e);
  Value keyLo = e.idx(0), keyHi = seqK; // keys any row of the block sees
  if (causal || window) {
    Value reach = e.add(e.add(lastQuery, diag), e.idx(1));
    if (window)
      reach = e.add(reach, windowRight);
    keyHi = e.maxS(e.minS(keyHi, reach), e.idx(0));
  }
  if (window)
    keyLo = e.maxS(e.sub(e.add(firstQuery, diag), windowLeft), e.idx(0));
  hiBlock = e.div(e.add(keyHi, e.idx(cfg.blockN - 1)), cfg.blockN);
  loBlock = e.div(keyLo, cfg.blockN);
  if (spec.splitKV) {
    // Split s takes the s-th run of ceil(blocks / numSplits) of the row
    // block's tiles (32-bit: a row block has fewer than 2^31 tiles); the
    // last runs may be empty, and their CTAs write O = 0, LSE = -inf.
    Type i32 = builder.getI32Type();
    auto to32 = [&](Value v) {
      return arith::IndexCastOp::create(builder, loc, i32, v).getResult();
    };
    Value blocks = e.maxS(e.sub(hiBlock, loBlock), e.idx(0));
    Value perSplit32 = arith::DivUIOp::create(
        builder, loc,
        to32(e.add(blocks, e.sub(e.toIndex(numSplits), e.idx(1)))),
        numSplits);
    Value perSplit = arith::IndexCastUIOp::create(
        builder, loc, builder.getIndexType(), perSplit32);
    loBlock = e.add(loBlock, e.mul(split, perSplit));
    hiBlock = e.minS(hiBlock, e.add(loBlock, perSplit));
  }
  nBlocks =
      e.select(active, e.maxS(e.sub(hiBlock, loBlock), e.idx(0)), e.idx(0));
}

std::pair<Value, Value> ForwardKernel::queryBlockRange(Emitter &x,
                                                      Value nBlock) {
  // Keys [keyLo, keyHi) of the tile; query i sees key j when i + diag -
  // left <= j <= i + diag + right (causal: right 0, left unbounded).
  Value keyLo = x.mul(nBlock, x.idx(cfg.blockN));
  Value keyHi = x.minS(x.add(keyLo, x.idx(cfg.blockN)), seqK);
  Value firstQuery = x.idx(0), endQuery = seqQ;
  if (causal || window) {
    Value reach = x.sub(keyLo, diag); // the first query whose diagonal reaches keyLo
    if (window)
      reach = x.sub(reach, windowRight);
    firstQuery = x.maxS(reach, x.idx(0));
  }
  if (window) // past keyHi - 1 + left - diag no query sees the tile
    endQuery = x.minS(endQuery, x.add(x.sub(keyHi, diag), windowLeft));
  Value lo = x.div(firstQuery, cfg.blockM);
  Value hi = x.div(x.add(endQuery, x.idx(cfg.blockM - 1)), cfg.blockM);
  // A tile past this sequence's keys (or a sequence without queries) is
  // seen by nobody.
  Value seen = x.andI(x.lt(keyLo, seqK), x.lt(firstQuery, endQuery));
  return {lo, x.select(seen, x.maxS(hi, lo), lo)};
}

Value ForwardKernel::firstQueryOf(Emitter &x) { return queryOf(x, mStart); }
Value ForwardKernel::lastQueryOf(Emitter &x) {
  return queryOf(
      x, x.maxS(x.sub(x.minS(x.add(mStart, x.idx(cfg.blockM)), rowLimit),
                      x.idx(1)),
                mStart));
}

Value ForwardKernel::tileOfIteration(Emitter &x, Value it) {
  return x.sub(x.sub(hiBlock, x.idx(1)), it);
}

// ---- the thread's rows
// -----------------------------------------------------------
Value ForwardKernel::rowIndex(Emitter &x, int mt, int half) {
  return x.add(x.add(mStart, warpRow0),
               x.add(x.idx(mt * 16 + half * 8), group));
}
Value ForwardKernel::rowQuery(Emitter &x, int mt, int half) {
  return queryOf(x, rowIndex(x, mt, half));
}
Value ForwardKernel::rowHead(Emitter &x, int mt, int half) {
  return headOf(x, rowIndex(x, mt, half));
}

// ---- score mods
// ------------------------------------------------------------------
void ForwardKernel::prepareScoreMods(int mTiles) {
  transformScores = spec.softcap || spec.bias != BiasMode::None;
  softmaxScale = transformScores ? e.f32(1.0) : scaleLog2;
  if (spec.softcap) {
    capLog2 = e.fmul(softcap, e.f32(kLog2e));
    capInner = arith::DivFOp::create(builder, loc, scaleLog2, capLog2);
  }
  // ALiBi slope * log2(e) per row (the row's head picks the slope).
  alibiLog2.assign(mTiles, {});
  if (spec.bias == BiasMode::Alibi)
    for (int mt = 0; mt < mTiles; ++mt)
      for (int half = 0; half < 2; ++half) {
        Value slope = memref::LoadOp::create(
            builder, loc, alibiSlopes,
            ValueRange{e.add(e.mul(batch, alibiBS), rowHead(e, mt, half))});
        alibiLog2[mt].push_back(e.fmul(slope, e.f32(kLog2e)));
      }
}

Value ForwardKernel::softcapTanh(Emitter &x, Value s) {
  // tanh(y) = 1 - 2 / (exp(2y) + 1): exact at both ends (exp2 -> 0, inf),
  // absolute error ~1e-7 near 0.
  Value t = x.exp2(x.fmul(s, x.fmul(capInner, x.f32(2 * kLog2e))));
  Value ratio = arith::DivFOp::create(x.b, x.loc, x.f32(2), x.fadd(t, x.f32(1)),
                                      arith::FastMathFlags::afn);
  return x.fsub(x.f32(1), ratio);
}

Value ForwardKernel::scoreToLog2(Emitter &x, Value s, Value *tanhOut) {
  if (!spec.softcap)
    return x.fmul(s, scaleLog2);
  Value tanh = softcapTanh(x, s);
  if (tanhOut)
    *tanhOut = tanh;
  return x.fmul(tanh, capLog2);
}

Value ForwardKernel::addBias(Emitter &x, Value score, int mt, int half,
                             Value key) {
  if (spec.bias == BiasMode::None)
    return score;
  // One at a time: argument order would leave the IR's to the compiler.
  Value query = rowQuery(x, mt, half);
  Value head = spec.bias == BiasMode::Tensor ? rowHead(x, mt, half) : Value();
  return addBiasAt(x, score, head, query, key,
                   spec.bias == BiasMode::Alibi ? alibiLog2[mt][half]
                                                : Value());
}

// Bias rows and keys are clamped into the sequence so that rows and keys past
// its end read a real element (the mask discards them).
Value ForwardKernel::addBiasAt(Emitter &x, Value score, Value head,
                               Value query, Value key, Value slopeLog2) {
  if (spec.bias == BiasMode::Tensor) {
    Value lastKey = x.sub(seqK, x.idx(1));
    Value lastQuery = x.sub(seqQ, x.idx(1));
    Value queryOffset = x.mul(x.minS(query, lastQuery), biasRS);
    Value headOffset = x.mul(head, biasHS);
    Value row = x.add(x.add(x.mul(batch, biasBS), headOffset), queryOffset);
    Value idx = x.add(row, x.minS(key, lastKey));
    Value b = memref::LoadOp::create(x.b, x.loc, bias, ValueRange{idx});
    Value bf = arith::ExtFOp::create(x.b, x.loc, x.b.getF32Type(), b);
    return x.fma(bf, x.f32(kLog2e), score);
  }
  if (spec.bias == BiasMode::Alibi) {
    // -slope * |key - (query + diag)|
    Value dist = x.sub(key, x.add(query, diag));
    dist = x.maxS(dist, x.sub(x.idx(0), dist));
    Value distF = arith::SIToFPOp::create(
        x.b, x.loc, x.b.getF32Type(),
        arith::IndexCastOp::create(x.b, x.loc, x.b.getI32Type(), dist));
    return x.fsub(score, x.fmul(slopeLog2, distF));
  }
  return score;
}

Value ForwardKernel::keyOf(Emitter &x, Value nBlock, Value keyRow0, int nt,
                           int el) {
  Value keyBase =
      x.add(x.mul(nBlock, x.idx(cfg.blockN)), x.mul(inGroup, x.idx(2)));
  if (keyRow0)
    keyBase = x.add(keyBase, keyRow0);
  return x.add(keyBase, x.idx(nt * 8 + el));
}

void ForwardKernel::transform(Emitter &x, Value nBlock, Value keyRow0,
                              Scores &acc, Scores *tanhOut) {
  if (!transformScores)
    return;
  if (tanhOut)
    *tanhOut = acc;
  for (int mt = 0; mt < int(acc.size()); ++mt)
    for (int nt = 0; nt < int(acc[mt].size()); ++nt)
      for (int half = 0; half < 2; ++half)
        for (int el = 0; el < 2; ++el) {
          Value &score = acc[mt][nt][2 * half + el];
          Value *tanh = tanhOut ? &(*tanhOut)[mt][nt][2 * half + el] : nullptr;
          score = addBias(x, scoreToLog2(x, score, tanh), mt, half,
                          keyOf(x, nBlock, keyRow0, nt, el));
        }
}

// ---- masks
// -----------------------------------------------------------------------
Value ForwardKernel::tileNeedsMask(Emitter &le, Value nBlock,
                                   Value &tileStart) {
  tileStart = le.mul(nBlock, le.idx(cfg.blockN));
  Value tileLast = le.sub(le.add(tileStart, le.idx(cfg.blockN)), le.idx(1));
  Value needsMask = le.ge(tileLast, seqK);
  if (causal || window) {
    // The block's first query sees keys up to firstQuery + diag (+ right).
    Value reach = le.add(firstQueryOf(le), diag);
    if (window)
      reach = le.add(reach, windowRight);
    needsMask = le.orI(needsMask, le.gt(tileLast, reach));
  }
  if (window) // its last query sees keys from lastQuery + diag - left
    needsMask = le.orI(
        needsMask,
        le.lt(tileStart, le.sub(le.add(lastQueryOf(le), diag), windowLeft)));
  return needsMask;
}

Scores ForwardKernel::applyMask(Emitter &x, Value needsMask, Value tileStart,
                                Value keyRow0, const Scores &acc) {
  const int mTiles = acc.size();
  const int nTiles = acc.front().size();
  auto maskIf = scf::IfOp::create(
      x.b, x.loc, needsMask,
      [&](OpBuilder &mb, Location ml) {
        Emitter me{mb, ml};
        // Per row, the keys it sees as [lo, hi) relative to this thread's
        // first key column in the slice: one compare with a constant per
        // score. They fit 32 bits: hi is clamped to [0, seqK], lo to >= 0,
        // and a visited tile starts at most a block's rows past any of its
        // rows' lo.
        Value firstKey = me.add(tileStart, me.mul(inGroup, me.idx(2)));
        if (keyRow0)
          firstKey = me.add(firstKey, keyRow0);
        auto relative = [&](Value key) {
          return arith::IndexCastOp::create(mb, ml, mb.getI32Type(),
                                            me.sub(key, firstKey));
        };
        auto masked = acc;
        for (int mt = 0; mt < mTiles; ++mt)
          for (int half = 0; half < 2; ++half) {
            Value qDiag = me.add(rowQuery(me, mt, half), diag);
            Value hi = seqK;
            if (causal)
              hi = me.minS(hi, me.add(qDiag, me.idx(1)));
            if (window)
              hi = me.minS(hi, me.add(me.add(qDiag, windowRight), me.idx(1)));
            Value hiRel = relative(me.maxS(hi, me.idx(0)));
            Value loRel;
            if (window)
              loRel = relative(me.maxS(me.sub(qDiag, windowLeft), me.idx(0)));
            for (int nt = 0; nt < nTiles; ++nt)
              for (int el = 0; el < 2; ++el) {
                Value col = me.i32(nt * 8 + el);
                Value ok = me.lt(col, hiRel);
                if (window)
                  ok = me.andI(ok, me.ge(col, loRel));
                Value &score = masked[mt][nt][2 * half + el];
                score = me.select(ok, score, negInfF);
              }
          }
        scf::YieldOp::create(mb, ml, flatten(masked));
      },
      [&](OpBuilder &ub, Location ul) {
        scf::YieldOp::create(ub, ul, flatten(acc));
      });
  return unflatten(maskIf.getResults(), mTiles, nTiles);
}

// ---- online softmax
// ----------------------------------------------------------------
SmallVector<Value> ForwardKernel::softmaxInit(int mTiles, int dTiles) {
  negInfF = e.f32(-std::numeric_limits<float>::infinity());
  zeroF = e.f32(0);
  const int mOffset = 4 * mTiles * dTiles;
  SmallVector<Value> init(mOffset, zeroF);
  init.append(2 * mTiles, negInfF);
  init.append(2 * mTiles, zeroF);
  return init;
}

ForwardKernel::SoftmaxStep::SoftmaxStep(ForwardKernel &k, Emitter &le,
                                        ValueRange carried,
                                        MutableArrayRef<Value> next, int mTiles,
                                        int dTiles, bool rescaleOnNewMax)
    : k(k), le(le), carried(carried), next(next), mTiles(mTiles),
      dTiles(dTiles), rescaleOnNewMax(rescaleOnNewMax),
      alphas(mTiles, SmallVector<Value>(2)),
      mUses(mTiles, SmallVector<Value>(2)) {}

void ForwardKernel::SoftmaxStep::updateMax(int mt, int half, Value threadMax) {
  Value rowMax = le.quadReduce(threadMax, true);
  Value mOld = carried[mOffset() + 2 * mt + half];
  Value mNew = le.fmax(mOld, le.fmul(rowMax, k.softmaxScale));
  // A row with every key masked so far keeps m = -inf; subtract 0 instead so
  // that exp2 sees -inf, not NaN.
  Value mUse = le.select(le.feq(mNew, k.negInfF), k.zeroF, mNew);
  mUses[mt][half] = mUse;
  alphas[mt][half] = le.exp2(le.fsub(mOld, mUse));
  next[mOffset() + 2 * mt + half] = mNew;
  if (rescaleOnNewMax) {
    Value moved = arith::CmpFOp::create(le.b, le.loc, arith::CmpFPredicate::OGT,
                                        mNew, mOld);
    maxMoved = maxMoved ? le.orI(maxMoved, moved) : moved;
  }
}

void ForwardKernel::SoftmaxStep::exponentials(
    Emitter &x, int mt, ArrayRef<AccTile> tiles,
    SmallVector<SmallVector<Value>> &rowTerms,
    SmallVector<std::array<Value, 2>> &pRows) {
  for (AccTile p : tiles) {
    for (int half = 0; half < 2; ++half) {
      Value negM = arith::NegFOp::create(x.b, x.loc, mUses[mt][half]);
      for (int el = 0; el < 2; ++el) {
        Value &pe = p[2 * half + el];
        pe = x.exp2(x.fma(pe, k.softmaxScale, negM));
        rowTerms[half].push_back(pe);
      }
    }
    pRows.push_back({k.packPair(x, p[0], p[1]), k.packPair(x, p[2], p[3])});
  }
}

void ForwardKernel::SoftmaxStep::rescaleO(Emitter &x, int mt, ValueRange from,
                                          MutableArrayRef<Value> to) {
  for (int dt = 0; dt < dTiles; ++dt)
    setTile(to, mt * dTiles + dt,
            scaleRows(x, tileAt(from, mt * dTiles + dt), alphas[mt]));
}

// With rescaleOnNewMax, O *= alpha only when some row of the warp has a new
// maximum (alpha = 1 everywhere otherwise: most iterations after the first
// tiles). The vote keeps the branch warp-uniform.
void ForwardKernel::SoftmaxStep::rescaleWhereMaxMoved(OpBuilder &b,
                                                      Location l) {
  Value anyMoved = NVVM::VoteSyncOp::create(b, l, b.getI1Type(), le.i32(-1),
                                            maxMoved, NVVM::VoteSyncKind::any)
                       .getResult();
  const int oValues = mOffset();
  auto branch = scf::IfOp::create(
      b, l, anyMoved,
      [&](OpBuilder &rb, Location rl) {
        Emitter re{rb, rl};
        SmallVector<Value> scaled(oValues);
        for (int mt = 0; mt < mTiles; ++mt)
          rescaleO(re, mt, carried, scaled);
        scf::YieldOp::create(rb, rl, scaled);
      },
      [&](OpBuilder &sb, Location sl) {
        scf::YieldOp::create(sb, sl, carried.take_front(oValues));
      });
  for (int i = 0; i < oValues; ++i)
    next[i] = branch.getResult(i);
}

SmallVector<SmallVector<Registers>>
ForwardKernel::SoftmaxStep::softmaxTile(const Scores &s, bool rescale) {
  constexpr int kSliceTerms = 2 * kSliceTilesOf16;
  const int nTiles = s.front().size();
  SmallVector<SmallVector<Registers>> pFrag(mTiles);
  for (int mt = 0; mt < mTiles; ++mt) {
    for (int half = 0; half < 2; ++half)
      updateMax(mt, half,
                le.treeReduce(rowScores(s[mt], half), /*isMax=*/true));
    SmallVector<SmallVector<Value>> rowTerms(2);
    SmallVector<std::array<Value, 2>> pRows;
    exponentials(le, mt, s[mt], rowTerms, pRows);
    for (int half = 0; half < 2; ++half) {
      ArrayRef<Value> terms = rowTerms[half];
      Value sum = sliceSum(le, terms.take_front(kSliceTerms));
      for (size_t at = kSliceTerms; at < terms.size(); at += kSliceTerms)
        sum = le.fadd(sum, sliceSum(le, terms.slice(at, kSliceTerms)));
      next[lOffset() + 2 * mt + half] =
          le.fma(carried[lOffset() + 2 * mt + half], alphas[mt][half], sum);
    }
    if (!rescaleOnNewMax && rescale)
      rescaleO(le, mt, carried, next);
    // P as A fragments: k-step kk joins score tiles 2kk and 2kk+1.
    for (int kk = 0; kk < nTiles / 2; ++kk)
      pFrag[mt].push_back(
          sliceOperand(ArrayRef(pRows).slice(2 * kk, kSliceTilesOf16)));
  }
  if (rescaleOnNewMax && rescale)
    rescaleWhereMaxMoved(le.b, le.loc);
  return pFrag;
}

Value ForwardKernel::sliceSum(Emitter &x, ArrayRef<Value> terms) {
  return x.treeReduce(SmallVector<Value>(terms), /*isMax=*/false);
}

Registers ForwardKernel::sliceOperand(ArrayRef<std::array<Value, 2>> pRows) {
  Registers a;
  for (int r = 0; r < 2 * kSliceTilesOf16; ++r)
    a.push_back(pRows[r / 2][r % 2]);
  return a;
}

// Operands stay as the MMAs' 32-bit registers of two elements (i32 for bf16,
// vector<2xf16> for f16): exactly what nvvm.mma.sync takes.
Value ForwardKernel::toRegister(OpBuilder &b, Value pair) {
  return pairRegister(b, loc, spec.dtype, pair);
}

Value ForwardKernel::roundPair(Emitter &x, Value lo, Value hi) {
  Value pair = vector::FromElementsOp::create(
      x.b, x.loc, VectorType::get({2}, f32), ValueRange{lo, hi});
  return arith::TruncFOp::create(x.b, x.loc, VectorType::get({2}, elemTy),
                                 pair);
}

Value ForwardKernel::packPair(Emitter &x, Value lo, Value hi) {
  return toRegister(x.b, roundPair(x, lo, hi));
}

AccTile ForwardKernel::scaleRows(Emitter &x, AccTile acc,
                                 ArrayRef<Value> factor) {
  for (int i = 0; i < 4; ++i)
    acc[i] = x.fmul(acc[i], factor[i / 2]);
  return acc;
}

// ---- epilogue
// ----------------------------------------------------------------------
ForwardKernel::FinalRow ForwardKernel::finishRow(Value lPartial, Value m) {
  FinalRow row;
  row.lSum = e.quadReduce(lPartial, false);
  row.m = m;
  row.empty = e.feq(row.lSum, zeroF); // every key masked: O = 0, LSE = -inf
  // rcp.approx: l >= 1 for a row with keys (its maximum adds exp2(0)), so
  // the approximation's ulp is all it costs; the IEEE reciprocal expands
  // into a slow path that cost 4% of a compile.
  row.inv =
      e.select(row.empty, zeroF,
               NVVM::RcpApproxFtzF32Op::create(builder, loc, f32, row.lSum));
  return row;
}

Value ForwardKernel::fragmentCol(int dt) {
  return e.add(e.idx(dt * 8), e.mul(inGroup, e.idx(2)));
}

Value ForwardKernel::oRowBase(Emitter &x, Value query, Value head) {
  return x.add(oSeqBase, x.add(x.mul(query, oRS), x.mul(head, oHS)));
}

void ForwardKernel::storeRowDirect(ValueRange results, int mt, int half,
                                   int dTiles, Value rowBase, Value inv) {
  const bool storeAlign = spec.globalAlignElems >= 2;
  auto pairType = VectorType::get({2}, elemTy);
  for (int dt = 0; dt < dTiles; ++dt) {
    const AccTile acc = tileAt(results, mt * dTiles + dt);
    Value c0 = e.fmul(acc[2 * half], inv);
    Value c1 = e.fmul(acc[2 * half + 1], inv);
    Value col = fragmentCol(dt);
    Value idx = e.add(rowBase, col);
    auto trunc = [&](Value x) {
      return arith::TruncFOp::create(builder, loc, elemTy, x);
    };
    bool fullTile = (dt + 1) * 8 <= spec.headDimV;
    if (fullTile && storeAlign) {
      Value pair = vector::FromElementsOp::create(
          builder, loc, pairType, ValueRange{trunc(c0), trunc(c1)});
      // Both halves in one 4-byte store: the column is even and the row
      // starts on an even element (storeAlign).
      vector::StoreOp::create(builder, loc, pair, o, ValueRange{idx},
                              /*nontemporal=*/false, llvm::MaybeAlign(4));
      continue;
    }
    for (int el = 0; el < 2; ++el) {
      Value val = trunc(el == 0 ? c0 : c1);
      Value elIdx = e.add(idx, e.idx(el));
      if (fullTile) {
        memref::StoreOp::create(builder, loc, val, o, ValueRange{elIdx});
        continue;
      }
      Value inCols = e.lt(e.add(col, e.idx(el)), e.idx(spec.headDimV));
      e.ifThen(inCols, [&] {
        memref::StoreOp::create(builder, loc, val, o, ValueRange{elIdx});
      });
    }
  }
}

void ForwardKernel::storePartialRow(ValueRange results, int mt, int half,
                                    int dTiles, const FinalRow &row,
                                    Value query, Value head) {
  // Entry (row, head) of this split: rows are (batch, query), or the packed
  // rows under varlen.
  Value wsRow = spec.varlen ? e.add(startQ, query)
                            : e.add(e.mul(batch, seqQArg), query);
  Value entry = e.add(e.mul(split, partialEntries),
                      e.add(e.mul(wsRow, e.toIndex(headsQArg)), head));
  Value rowBase = e.mul(entry, e.idx(partialPitch(spec.headDimV)));
  auto pairType = VectorType::get({2}, f32);
  for (int dt = 0; dt < dTiles; ++dt) {
    const AccTile acc = tileAt(results, mt * dTiles + dt);
    Value c0 = e.fmul(acc[2 * half], row.inv);
    Value c1 = e.fmul(acc[2 * half + 1], row.inv);
    Value col = fragmentCol(dt);
    Value idx = e.add(rowBase, col);
    if ((dt + 1) * 8 <= spec.headDimV) {
      // An even column of a row of an even pitch: 8-byte aligned.
      Value pair = vector::FromElementsOp::create(builder, loc, pairType,
                                                  ValueRange{c0, c1});
      vector::StoreOp::create(builder, loc, pair, partialO, ValueRange{idx},
                              /*nontemporal=*/false, llvm::MaybeAlign(8));
      continue;
    }
    for (int el = 0; el < 2; ++el) {
      Value inCols = e.lt(e.add(col, e.idx(el)), e.idx(spec.headDimV));
      e.ifThen(inCols, [&] {
        memref::StoreOp::create(builder, loc, el == 0 ? c0 : c1, partialO,
                                ValueRange{e.add(idx, e.idx(el))});
      });
    }
  }
  Value lseVal = e.select(row.empty, negInfF,
                          e.fmul(e.fadd(row.m, e.log2(row.lSum)), e.f32(kLn2)));
  Value first = e.cmp(arith::CmpIPredicate::eq, inGroup, e.idx(0));
  e.ifThen(first, [&] {
    memref::StoreOp::create(builder, loc, lseVal, partialLse,
                            ValueRange{entry});
  });
}

void ForwardKernel::storeLse(const FinalRow &row, Value query, Value head) {
  if (!spec.writeLse)
    return;
  Value lseVal = e.select(row.empty, negInfF,
                          e.fmul(e.fadd(row.m, e.log2(row.lSum)), e.f32(kLn2)));
  Value first = e.cmp(arith::CmpIPredicate::eq, inGroup, e.idx(0));
  e.ifThen(first, [&] {
    Value lseIdx = e.add(e.add(e.mul(batch, lseBS), e.mul(head, lseHS)),
                         e.add(startQ, query));
    memref::StoreOp::create(builder, loc, lseVal, lse, ValueRange{lseIdx});
  });
}

} // namespace flashjit
