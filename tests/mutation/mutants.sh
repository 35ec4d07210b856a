# Sourced by run-cpu.sh and run-gpu.sh: `mutants`, the names of the injected
# bugs (patches/NN-<name>.patch after 00-mutant-switch), "none" (the
# control, which must pass) first.
mutants=(none)
for p in "$(dirname "${BASH_SOURCE[0]}")"/patches/[0-9]*.patch; do
  name=$(basename "$p" .patch)
  name=${name#[0-9][0-9]-}
  [[ $name == mutant-switch ]] || mutants+=("$name")
done
