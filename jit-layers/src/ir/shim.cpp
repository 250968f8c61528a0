// What orcjit needs from LLVM's C++ API that its C API lacks: clearing a global's dso_local
// mark (GlobalValue::setDSOLocal); a target machine's large-data threshold
// (TargetMachine::setLargeDataThreshold); taking a function out of its
// module's function list without deleting it, and putting it back (llvm/IR/Function.h,
// Function::removeFromParent; llvm/IR/Module.h, Module::getFunctionList), and the same for
// global variables (GlobalVariable::removeFromParent, Module::insertGlobalVariable). A module
// at rest holds thousands of declarations, and the code generator visits every one of them for
// every partition it compiles (AsmPrinter::doFinalization names each declaration's symbol); the
// compile-on-demand layer keeps out those the partitions compiled lately did not use, and puts
// them back when one does. And LLVM's static estimate of how often each block of a function
// runs (llvm/Analysis/BlockFrequencyInfo.h, from the branch probabilities of
// llvm/Analysis/BranchProbabilityInfo.h), which the C API does not offer: the speculator's static
// policy ranks a function's callees by it.

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>
#include <llvm/Analysis/BlockFrequencyInfo.h>
#include <llvm/Analysis/BranchProbabilityInfo.h>
#include <llvm/Analysis/LoopInfo.h>
#include <llvm/Analysis/PostDominators.h>
#include <llvm/IR/Dominators.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/GlobalVariable.h>
#include <llvm/IR/Module.h>
#include <llvm/Target/TargetMachine.h>

extern "C" void orcjit_unlink_function(LLVMValueRef f) {
    llvm::unwrap<llvm::Function>(f)->removeFromParent();
}

extern "C" void orcjit_relink_function(LLVMModuleRef m, LLVMValueRef f) {
    llvm::unwrap(m)->getFunctionList().push_back(llvm::unwrap<llvm::Function>(f));
}

extern "C" void orcjit_unlink_variable(LLVMValueRef v) {
    llvm::unwrap<llvm::GlobalVariable>(v)->removeFromParent();
}

extern "C" void orcjit_relink_variable(LLVMModuleRef m, LLVMValueRef v) {
    llvm::unwrap(m)->insertGlobalVariable(llvm::unwrap<llvm::GlobalVariable>(v));
}

// Clears the dso_local mark of global `g` (GlobalValue::setDSOLocal, llvm/IR/GlobalValue.h),
// which the C API cannot change. The caller keeps the verifier's rule: a global with local
// linkage or non-default visibility stays dso_local.
extern "C" void orcjit_clear_dso_local(LLVMValueRef g) {
    llvm::unwrap<llvm::GlobalValue>(g)->setDSOLocal(false);
}

// Sets the size above which the medium code model puts a global in a large data section
// (TargetMachine::setLargeDataThreshold, llvm/Target/TargetMachine.h): clang's
// -mlarge-data-threshold, which the C API cannot pass. An LLVMTargetMachineRef is a
// TargetMachine pointer (llvm/lib/Target/TargetMachineC.cpp).
extern "C" void orcjit_set_large_data_threshold(LLVMTargetMachineRef tm, uint64_t threshold) {
    reinterpret_cast<llvm::TargetMachine *>(tm)->setLargeDataThreshold(threshold);
}

// Puts static constructors and destructors in .init_array / .fini_array, as clang does
// (clang::BackendUtil sets TargetOptions::UseInitArray; the C API's target machines keep the
// default, .ctors / .dtors). The object file lowering reads the option when code generation
// starts (TargetLoweringObjectFileELF::Initialize, llvm/lib/CodeGen/
// TargetLoweringObjectFileImpl.cpp), so it may be set on a machine already made.
extern "C" void orcjit_use_init_array(LLVMTargetMachineRef tm) {
    reinterpret_cast<llvm::TargetMachine *>(tm)->Options.UseInitArray = true;
}

// Writes each block of function `f` (in order, at most `capacity`) and its estimated frequency
// relative to the entry block's (1.0: as often as the function is called) to `blocks` and
// `frequencies`; returns the number of blocks. Builds the analyses BlockFrequencyInfo needs
// the way its legacy pass does (BlockFrequencyInfoWrapperPass::runOnFunction).
extern "C" unsigned orcjit_block_frequencies(LLVMValueRef f, LLVMBasicBlockRef *blocks, double *frequencies,
                                             unsigned capacity) {
    llvm::Function &function = *llvm::unwrap<llvm::Function>(f);
    if (function.isDeclaration())
        return 0;
    llvm::DominatorTree dominators(function);
    llvm::PostDominatorTree post_dominators(function);
    llvm::LoopInfo loops(dominators);
    llvm::BranchProbabilityInfo probabilities(function, loops, nullptr, &dominators, &post_dominators);
    llvm::BlockFrequencyInfo frequency(function, probabilities, loops);
    double entry = static_cast<double>(frequency.getEntryFreq().getFrequency());
    unsigned n = 0;
    for (llvm::BasicBlock &block : function) {
        if (n == capacity)
            break;
        blocks[n] = llvm::wrap(&block);
        frequencies[n] = entry > 0 ? static_cast<double>(frequency.getBlockFreq(&block).getFrequency()) / entry : 1.0;
        n++;
    }
    return n;
}
