# gnuplot docs/jitter.gp  (from the directory dpdk_style ran in) -> jitter.png
dir = 'docs'
set terminal pngcairo size 1000,600 noenhanced font 'sans,11'
set output dir.'/jitter.png'
set title "Polling loop gaps while a control thread flushes, invalidates, drains\n2 workers, 750 operations per run; signals handled: naive 1500, ipimask 0; RES+CAL on their CPUs: 751 vs 1"
set logscale xy
set xlabel 'loop gap (time between two iterations of the polling loop)'
set ylabel 'loop iterations with a gap >= x (all workers)'
set format x '%.0s%cs'
set xrange [250e-9:*]
set grid
set key top right
plot dir.'/jitter-naive.dat' using ($1*1e-9):3 with steps lw 2 lc rgb '#d62728' title 'naive: pthread_kill to every worker', \
     dir.'/jitter-ipimask.dat' using ($1*1e-9):3 with steps lw 2 lc rgb '#1f77b4' title 'ipimask: ipm_poll(), cond flush, batch, pcache drain'
