// What orcjit needs from LLVM's C++ API that its C API lacks: taking a function out of its
// module's function list without deleting it, and putting it back (llvm/IR/Function.h,
// Function::removeFromParent; llvm/IR/Module.h, Module::getFunctionList), and the same for
// global variables (GlobalVariable::removeFromParent, Module::insertGlobalVariable). A module
// at rest holds thousands of declarations, and the code generator visits every one of them for
// every partition it compiles (AsmPrinter::doFinalization names each declaration's symbol); the
// compile-on-demand layer keeps out those the partitions compiled lately did not use, and puts
// them back when one does.

#include <llvm-c/Core.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/GlobalVariable.h>
#include <llvm/IR/Module.h>

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
