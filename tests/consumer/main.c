/* SPDX-License-Identifier: MIT */
#include <ipimask.h>
#include <stdio.h>

static void hello(int slot, void *info)
{
	(void)info;
	printf("consumer: ran on slot %d\n", slot);
}

int main(void)
{
	ipm_mask_t *m;
	int slot, n;

	if (ipm_init(NULL) || (slot = ipm_thread_register()) < 0)
		return 1;
	m = ipm_mask_alloc();
	ipm_mask_set(m, slot);
	n = ipm_on_each_thread_mask(m, hello, NULL, IPM_WAIT | IPM_SELF);
	ipm_mask_free(m);
	ipm_fini();
	return n == 1 ? 0 : 1;
}
