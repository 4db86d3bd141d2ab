include $(sort $(wildcard $(BR2_EXTERNAL_RACKBOOT_PATH)/package/*/*.mk))
