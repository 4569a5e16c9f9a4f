//! Work splitting: on all cores with the `parallel` feature, in order without it (the browser).

/// Threads the kernels may use.
pub(crate) fn threads() -> usize {
    #[cfg(feature = "parallel")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "parallel"))]
    {
        1
    }
}

/// Calls `f(index, chunk)` for consecutive `chunk_len`-long pieces of `data` (the last may be
/// shorter), in parallel when the feature is on.
pub(crate) fn for_each_chunk<T: Send>(
    data: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk_len = chunk_len.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk));
    }
    #[cfg(not(feature = "parallel"))]
    {
        data.chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk));
    }
}

/// How the GEMM of one tile runs: on all cores when the tiles themselves are not shared out.
pub(crate) fn gemm_parallelism(tiles_in_parallel: bool) -> gemm::Parallelism {
    #[cfg(feature = "parallel")]
    {
        if !tiles_in_parallel && threads() > 1 {
            return gemm::Parallelism::Rayon(0);
        }
    }
    let _ = tiles_in_parallel;
    gemm::Parallelism::None
}
