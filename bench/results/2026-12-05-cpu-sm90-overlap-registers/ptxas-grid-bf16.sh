for d in 64 96 128 160 192 224 256; do for w in 4 8; do for bn in 64 80 96 112 128 144 160 176 192 208 224 240 256; do for m in none causal; do
  n=d${d}_w${w}_bn${bn}_$m; bm=$((w*16))
  if build/bin/flashjit compile --arch sm_90a --family sm90 --head-dim $d --warps $w --block-m $bm --block-n $bn --mask $m --overlap on --pingpong off --emit ptx > $n.ptx 2>/dev/null; then
    r=$(ptxas -arch=sm_90a -v $n.ptx -o /dev/null 2>&1 | grep -E "spill stores|C7513|Performance" | head -1 | sed 's/ *0 bytes stack frame, //'); echo "$n $r"; rm -f $n.ptx
  fi
done; done; done; done
