; ModuleID = 'demo_main.c'
source_filename = "demo_main.c"
target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

@.str.1 = private unnamed_addr constant [41 x i8] c"  %d primes below 20000, the largest %d\0A\00", align 1
@.str.2 = private unnamed_addr constant [17 x i8] c"  fib(40) = %ld\0A\00", align 1
@str = private unnamed_addr constant [82 x i8] c"orcjit: compiled two LLVM IR modules on a thread pool, linked them, and ran main:\00", align 1

; Function Attrs: nounwind uwtable
define noundef i32 @main() local_unnamed_addr #0 {
  br label %6

1:                                                ; preds = %6
  %2 = tail call i32 @puts(ptr nonnull dereferenceable(1) @str)
  %3 = tail call i32 (ptr, ...) @printf(ptr noundef nonnull dereferenceable(1) @.str.1, i32 noundef %13, i32 noundef %14)
  %4 = tail call i64 @fib(i32 noundef 40) #4
  %5 = tail call i32 (ptr, ...) @printf(ptr noundef nonnull dereferenceable(1) @.str.2, i64 noundef %4)
  ret i32 0

6:                                                ; preds = %0, %6
  %7 = phi i32 [ 2, %0 ], [ %15, %6 ]
  %8 = phi i32 [ 0, %0 ], [ %14, %6 ]
  %9 = phi i32 [ 0, %0 ], [ %13, %6 ]
  %10 = tail call i32 @is_prime(i32 noundef %7) #4
  %11 = icmp ne i32 %10, 0
  %12 = zext i1 %11 to i32
  %13 = add nuw nsw i32 %9, %12
  %14 = select i1 %11, i32 %7, i32 %8
  %15 = add nuw nsw i32 %7, 1
  %16 = icmp eq i32 %15, 20000
  br i1 %16, label %1, label %6, !llvm.loop !4
}

declare i32 @is_prime(i32 noundef) local_unnamed_addr #1

; Function Attrs: nofree nounwind
declare noundef i32 @printf(ptr nocapture noundef readonly, ...) local_unnamed_addr #2

declare i64 @fib(i32 noundef) local_unnamed_addr #1

; Function Attrs: nofree nounwind
declare noundef i32 @puts(ptr nocapture noundef readonly) local_unnamed_addr #3

attributes #0 = { nounwind uwtable "min-legal-vector-width"="0" "no-trapping-math"="true" "stack-protector-buffer-size"="8" "target-cpu"="x86-64" "target-features"="+cmov,+cx8,+fxsr,+mmx,+sse,+sse2,+x87" "tune-cpu"="generic" }
attributes #1 = { "no-trapping-math"="true" "stack-protector-buffer-size"="8" "target-cpu"="x86-64" "target-features"="+cmov,+cx8,+fxsr,+mmx,+sse,+sse2,+x87" "tune-cpu"="generic" }
attributes #2 = { nofree nounwind "no-trapping-math"="true" "stack-protector-buffer-size"="8" "target-cpu"="x86-64" "target-features"="+cmov,+cx8,+fxsr,+mmx,+sse,+sse2,+x87" "tune-cpu"="generic" }
attributes #3 = { nofree nounwind }
attributes #4 = { nounwind }

!llvm.module.flags = !{!0, !1, !2}
!llvm.ident = !{!3}

!0 = !{i32 1, !"wchar_size", i32 4}
!1 = !{i32 8, !"PIC Level", i32 2}
!2 = !{i32 7, !"uwtable", i32 2}
!3 = !{!"Debian clang version 19.1.7 (3~deb12u1)"}
!4 = distinct !{!4, !5, !6}
!5 = !{!"llvm.loop.mustprogress"}
!6 = !{!"llvm.loop.unroll.disable"}
