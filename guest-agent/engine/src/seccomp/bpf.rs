//! The filter's BPF, laid out as libseccomp lays it out: the architecture
//! check, a search tree over syscall numbers, and for each syscall its
//! rules' argument comparisons (each 64-bit argument as two 32-bit halves).

use std::collections::BTreeMap;

use super::{Action, Comparison, Op, SeccompError, SyscallRules, Target, MAX_INSTRUCTIONS, X32_SYSCALL_BIT};

// Offsets into `struct seccomp_data`; argument words are little-endian.
pub(super) const NR_OFFSET: u32 = 0;
pub(super) const ARCH_OFFSET: u32 = 4;
pub(super) const ARGS_OFFSET: u32 = 16;

pub(super) const BPF_LD_W_ABS: u16 = 0x20;
pub(super) const BPF_LD_IMM: u16 = 0x00;
pub(super) const BPF_ALU_AND_K: u16 = 0x54;
pub(super) const BPF_JMP_JA: u16 = 0x05;
pub(super) const BPF_JEQ_K: u16 = 0x15;
pub(super) const BPF_JGT_K: u16 = 0x25;
pub(super) const BPF_JGE_K: u16 = 0x35;
pub(super) const BPF_RET_K: u16 = 0x06;

/// Syscalls per leaf of the search tree: a short run of compares costs less
/// than another level of jumps.
const LEAF_SYSCALLS: usize = 8;

pub(super) fn generate(
    target: &Target,
    default: Action,
    syscalls: &BTreeMap<u32, SyscallRules>,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut asm = Asm::default();
    let deny = default.ret();

    asm.push(Insn::Load(ARCH_OFFSET));
    let (native, foreign) = (asm.label(), asm.label());
    asm.push(Insn::Jump { op: BPF_JEQ_K, k: target.audit_arch, jt: native, jf: foreign });
    asm.mark(foreign);
    asm.push(Insn::Ret(deny));
    asm.mark(native);
    asm.push(Insn::Load(NR_OFFSET));
    if target.x32 {
        let (x32, x86_64) = (asm.label(), asm.label());
        asm.push(Insn::Jump { op: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: x32, jf: x86_64 });
        asm.mark(x32);
        asm.push(Insn::Ret(deny));
        asm.mark(x86_64);
    }

    let sorted: Vec<(u32, &SyscallRules)> = syscalls.iter().map(|(nr, rules)| (*nr, rules)).collect();
    let mut conditional = Vec::new();
    search(&mut asm, &sorted, deny, &mut conditional);

    for (label, action, chains) in conditional {
        asm.mark(label);
        for chain in chains {
            let next = asm.label();
            for comparison in chain {
                compare(&mut asm, comparison, next);
            }
            asm.push(Insn::Ret(action.ret()));
            asm.mark(next);
        }
        asm.push(Insn::Ret(deny));
    }
    asm.finish()
}

/// A binary search on the syscall number (in the accumulator). Unconditional
/// syscalls return right where they match; conditional ones jump to a block
/// after the tree, collected in `conditional`.
fn search<'a>(
    asm: &mut Asm,
    syscalls: &[(u32, &'a SyscallRules)],
    deny: u32,
    conditional: &mut Vec<(Label, Action, &'a [Vec<Comparison>])>,
) {
    if syscalls.len() > LEAF_SYSCALLS {
        let (low, high) = syscalls.split_at(syscalls.len() / 2);
        let (to_high, high_start, low_start) = (asm.label(), asm.label(), asm.label());
        asm.push(Insn::Jump { op: BPF_JGE_K, k: high[0].0, jt: to_high, jf: low_start });
        // Conditional jumps reach 255 instructions at most; `ja` reaches anywhere.
        asm.mark(to_high);
        asm.push(Insn::Goto(high_start));
        asm.mark(low_start);
        search(asm, low, deny, conditional);
        asm.mark(high_start);
        search(asm, high, deny, conditional);
        return;
    }
    for &(nr, rules) in syscalls {
        let (hit, miss) = (asm.label(), asm.label());
        asm.push(Insn::Jump { op: BPF_JEQ_K, k: nr, jt: hit, jf: miss });
        asm.mark(hit);
        match rules {
            SyscallRules::Always(action) => asm.push(Insn::Ret(action.ret())),
            SyscallRules::When(action, chains) => {
                let block = asm.label();
                conditional.push((block, *action, chains));
                asm.push(Insn::Goto(block));
            }
        }
        asm.mark(miss);
    }
    asm.push(Insn::Ret(deny));
}

/// Falls through when the comparison holds and jumps to `fail` when not,
/// comparing the high halves first as libseccomp does on 64-bit arches.
/// A 32-bit argument is compared as if its high half were zero, which is
/// what the kernel reads.
fn compare(asm: &mut Asm, c: &Comparison, fail: Label) {
    let lo_offset = ARGS_OFFSET + 8 * u32::from(c.index);
    let hi_offset = lo_offset + 4;
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let (ok, second, third) = (asm.label(), asm.label(), asm.label());
    if c.low_half_only {
        // The accumulator holds the high half below; a constant 0 stands in
        // for it (`for_syscall` made sure the rule's own high halves are 0).
        asm.push(Insn::LoadConstant(0));
    } else {
        asm.push(Insn::Load(hi_offset));
    }
    match c.op {
        Op::Eq => {
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: second, jf: fail });
            asm.mark(second);
            asm.push(Insn::Load(lo_offset));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: lo, jt: ok, jf: fail });
        }
        Op::Ne => {
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: second, jf: ok });
            asm.mark(second);
            asm.push(Insn::Load(lo_offset));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: lo, jt: fail, jf: ok });
        }
        Op::Gt | Op::Ge => {
            asm.push(Insn::Jump { op: BPF_JGT_K, k: hi, jt: ok, jf: second });
            asm.mark(second);
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: third, jf: fail });
            asm.mark(third);
            asm.push(Insn::Load(lo_offset));
            let op = if c.op == Op::Gt { BPF_JGT_K } else { BPF_JGE_K };
            asm.push(Insn::Jump { op, k: lo, jt: ok, jf: fail });
        }
        Op::Lt | Op::Le => {
            asm.push(Insn::Jump { op: BPF_JGT_K, k: hi, jt: fail, jf: second });
            asm.mark(second);
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: third, jf: ok });
            asm.mark(third);
            asm.push(Insn::Load(lo_offset));
            let op = if c.op == Op::Lt { BPF_JGE_K } else { BPF_JGT_K };
            asm.push(Insn::Jump { op, k: lo, jt: fail, jf: ok });
        }
        Op::MaskedEq => {
            let (mask_hi, mask_lo) = ((c.value >> 32) as u32, c.value as u32);
            let (want_hi, want_lo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            asm.push(Insn::And(mask_hi));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: want_hi & mask_hi, jt: second, jf: fail });
            asm.mark(second);
            asm.push(Insn::Load(lo_offset));
            asm.push(Insn::And(mask_lo));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: want_lo & mask_lo, jt: ok, jf: fail });
        }
    }
    asm.mark(ok);
}

#[derive(Debug, Clone, Copy)]
struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Insn {
    Load(u32),
    /// Loads a constant into the accumulator.
    LoadConstant(u32),
    And(u32),
    Jump {
        op: u16,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Goto(Label),
    Ret(u32),
    /// Where a label points; not an instruction.
    Mark(Label),
}

/// Instructions with symbolic jump targets, so that the generator need not
/// count offsets by hand.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn mark(&mut self, label: Label) {
        self.insns.push(Insn::Mark(label));
    }

    fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    fn finish(self) -> Result<Vec<libc::sock_filter>, SeccompError> {
        let mut at = vec![None; self.labels];
        let mut len = 0;
        for insn in &self.insns {
            match insn {
                Insn::Mark(label) => at[label.0] = Some(len),
                _ => len += 1,
            }
        }
        if len > MAX_INSTRUCTIONS {
            return Err(SeccompError::TooLarge(len));
        }
        // BPF only jumps forward; a label behind its jump, or never marked,
        // is a bug in the generator above, not a property of the profile.
        let offset = |label: Label, pc: usize| {
            at[label.0].and_then(|target| target.checked_sub(pc + 1)).expect("BPF jumps go forward to a marked label")
        };
        let mut program = Vec::with_capacity(len);
        for insn in self.insns {
            let pc = program.len();
            let (code, jt, jf, k) = match insn {
                Insn::Mark(_) => continue,
                Insn::Load(offset) => (BPF_LD_W_ABS, 0, 0, offset),
                Insn::LoadConstant(value) => (BPF_LD_IMM, 0, 0, value),
                Insn::And(mask) => (BPF_ALU_AND_K, 0, 0, mask),
                Insn::Ret(value) => (BPF_RET_K, 0, 0, value),
                Insn::Goto(label) => (BPF_JMP_JA, 0, 0, offset(label, pc) as u32),
                Insn::Jump { op, k, jt, jf } => {
                    let near = |label| u8::try_from(offset(label, pc)).expect("conditional BPF jumps stay within 255");
                    (op, near(jt), near(jf), k)
                }
            };
            program.push(libc::sock_filter { code, jt, jf, k });
        }
        Ok(program)
    }
}
